"""Reading HTTP bodies with a size cap. A server that is broken in the way we probe for may also send a
body without end (a generation that never stops, a proxy error page in a loop); the sidecar reads at
most ``limit`` bytes and then gives up on that response instead of growing without bound."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx


class ResponseTooLarge(Exception):
    def __init__(self, url: str, limit: int) -> None:
        super().__init__(f"{url}: body larger than {limit} bytes")
        self.limit = limit


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The whole body of a streamed ``response``, or ResponseTooLarge past ``limit`` bytes.

    A Content-Length over the limit fails before reading anything."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(str(response.url), limit)
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > limit:
            raise ResponseTooLarge(str(response.url), limit)
    return bytes(buf)


async def iter_lines_capped(response: httpx.Response, limit: int) -> AsyncIterator[str]:
    """Lines of a streamed body (server-sent events), with at most ``limit`` bytes read in total.

    httpx's own ``aiter_lines`` buffers a line until its newline arrives, so a body without newlines
    would grow in memory; counting every byte read bounds that too."""
    seen = 0
    pending = b""
    async for chunk in response.aiter_bytes():
        seen += len(chunk)
        if seen > limit:
            raise ResponseTooLarge(str(response.url), limit)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", errors="replace")
