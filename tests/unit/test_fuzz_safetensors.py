"""Property-based fuzzing of the one safetensors reader (issue 16): any length prefix, any header bytes,
any file size go through serve.checkpoint.safetensors_file, and only two outcomes may come out: a Header
whose tensors tile the data section exactly (what the official reader accepts), or a KitError whose
message is one line naming the file. Anything else (a traceback for the user, a MemoryError from a
length of 2^62) fails the test with the input that caused it.

Three properties: well-formed headers with small damage (most inputs reach the entry and tiling
checks), arbitrary JSON values as the header, and raw bytes through read_header on a real file. Bounded:
a fixed number of examples and a deadline per example; about 5 s in all here."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from serve.checkpoint.safetensors_file import DTYPE_SIZES, Header, parse_header, read_header  # noqa: E402
from serve.errors import KitError  # noqa: E402

FUZZ = settings(
    max_examples=int(os.environ.get("KIT_FUZZ_EXAMPLES", "150")),
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
PATH = "model-00001-of-00002.safetensors"
DTYPES = st.sampled_from([*DTYPE_SIZES, "F128", "", "bf16", "I4"])
INTS = st.one_of(st.integers(-3, 64), st.integers(-(2**70), 2**70), st.booleans(), st.floats(allow_nan=True))


def _outcome(run: Any) -> Header | None:
    """The header, or None after a one-line KitError; anything else propagates and fails the test."""
    try:
        return run()
    except KitError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


def _assert_tiles(header: Header) -> None:
    at = 0
    for t in header.in_file_order():
        assert t.begin == at and t.end >= t.begin
        at = t.end
    assert at == header.file_size - header.data_start


@st.composite
def damaged_headers(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    """A header of n tensors laid end to end, then some of its fields damaged; the length prefix and
    the file size are right, or drawn wrong."""
    entries: dict[str, Any] = {}
    at = 0
    for i in range(draw(st.integers(0, 5))):
        dtype = draw(st.sampled_from(sorted(DTYPE_SIZES)))
        shape = draw(st.lists(st.integers(0, 6), max_size=3))
        size = 1
        for d in shape:
            size *= d
        nbytes = int(size * DTYPE_SIZES[dtype]) if (size * DTYPE_SIZES[dtype]) % 1 == 0 else 0
        entry: dict[str, Any] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + nbytes]}
        at += nbytes
        damage = draw(st.sampled_from(["none", "none", "dtype", "shape", "offsets", "entry", "extra"]))
        if damage == "dtype":
            entry["dtype"] = draw(DTYPES)
        elif damage == "shape":
            entry["shape"] = draw(st.one_of(st.lists(INTS, max_size=3), INTS, st.none(), st.text(max_size=3)))
        elif damage == "offsets":
            entry["data_offsets"] = draw(st.one_of(st.lists(INTS, max_size=3), INTS, st.none()))
        elif damage == "entry":
            entry = draw(st.one_of(st.none(), st.lists(INTS, max_size=2), st.text(max_size=4)))
        elif damage == "extra":
            entry["extra"] = draw(st.text(max_size=4))
        entries[draw(st.text(min_size=0, max_size=12)) + f".{i}"] = entry
    if draw(st.booleans()):
        entries["__metadata__"] = draw(
            st.one_of(
                st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
                st.dictionaries(st.text(max_size=4), INTS, max_size=2),
                st.lists(st.text(max_size=3), max_size=2),
            )
        )
    raw_json = json.dumps(entries).encode()
    header_len = len(raw_json)
    data_len = at + draw(st.sampled_from([0, 0, 0, 1, -1, 7]))
    file_size = max(0, 8 + header_len + data_len)
    length = draw(st.sampled_from(["right", "right", "random", "huge", "short"]))
    if length == "right":
        raw_len = struct.pack("<Q", header_len)
    elif length == "random":
        raw_len = struct.pack("<Q", draw(st.integers(0, 2**64 - 1)))
    elif length == "huge":
        raw_len = struct.pack("<Q", 2**62)
    else:
        raw_len = draw(st.binary(max_size=7))
    return raw_len, raw_json, file_size


@FUZZ
@given(damaged_headers())
def test_a_damaged_header_is_a_header_that_tiles_or_one_line(case: tuple[bytes, bytes, int]) -> None:
    raw_len, raw_json, file_size = case
    header = _outcome(lambda: parse_header(raw_len, raw_json, path=PATH, file_size=file_size))
    if header is not None:
        _assert_tiles(header)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@FUZZ
@given(JSON, st.integers(0, 4096))
def test_any_json_value_as_the_header(value: Any, extra: int) -> None:
    raw_json = json.dumps(value).encode()
    raw_len = struct.pack("<Q", len(raw_json))
    file_size = 8 + len(raw_json) + extra
    header = _outcome(lambda: parse_header(raw_len, raw_json, path=PATH, file_size=file_size))
    if header is not None:
        _assert_tiles(header)


@FUZZ
@given(st.binary(max_size=300))
def test_raw_bytes_through_read_header(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PATH
        path.write_bytes(data)
        header = _outcome(lambda: read_header(path))
        if header is not None:
            _assert_tiles(header)
