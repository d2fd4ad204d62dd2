"""The watchdog's dead-man switch: stops vLLM's process group when the launcher dies before it.

The watchdog (healthcheck.watchdog) runs vLLM in a session and process group of its own, so that a wedge
kill reaches the engine core and the workers, and so that a terminal's Ctrl-C reaches vLLM once, through
the launcher. But then nothing stops vLLM when the launcher itself is killed with SIGKILL (or crashes) on
bare metal: vLLM and its engine core would run on as orphans, holding the port and the GPU memory.
(In a container this cannot happen: tini exits with the launcher, and the kernel kills everything left in
the container's PID namespace.)

PR_SET_PDEATHSIG in vLLM's process would reach that one process only, not the engine core and workers
it starts (the flag is not inherited), and fires on the exit of the launcher's forking thread rather than
of the launcher. Keeping vLLM in the launcher's process group does not help either: SIGKILL of the
launcher's pid reaches no other process. So the launcher starts this guard first, in a session of its
own (no terminal or group signal reaches it), and keeps the write end of a pipe to it. The guard reads
vLLM's process group id from the pipe, then waits. ``done`` from the launcher: it stopped vLLM itself,
nothing to do. End of file without ``done``: the launcher is gone (the kernel closed its end), so the
guard sends vLLM's group SIGTERM (vLLM's own shutdown stops its engine core), and SIGKILL after the
grace period if any of the group is left.

``python -I healthcheck/orphan_guard.py GRACE_S`` (started by :class:`Guard`); standard library only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

DONE = b"done\n"


def _say(message: str) -> None:
    print(f"[watchdog guard] {message}", file=sys.stderr, flush=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a foreign group took the id: not ours to kill
        return False
    return True


def stop_group(pgid: int, grace_s: float) -> str:
    """SIGTERM to the group, SIGKILL after ``grace_s`` if any member is left; says what it took."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return "already gone"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return "stopped by SIGTERM"
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return "stopped by SIGTERM"
    return f"killed (SIGKILL after {grace_s:g} s)"


def main(argv: Sequence[str]) -> int:
    grace_s = float(argv[0])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe tells it what to do
    received = b""
    while chunk := os.read(0, 4096):
        received += chunk
    pid_line, _, rest = received.partition(b"\n")
    if rest == DONE or not pid_line.strip().isdigit():
        return 0  # the launcher stopped vLLM itself (or died before starting it)
    pgid = int(pid_line)
    _say(f"the launcher is gone: stopping vLLM's process group {pgid} (SIGTERM, SIGKILL after {grace_s:g} s)")
    _say(f"vLLM's process group {pgid}: {stop_group(pgid, grace_s)}")
    return 0


class Guard:
    """The launcher's side: start the guard, tell it vLLM's group, and tell it when vLLM was stopped."""

    def __init__(self, grace_s: float) -> None:
        read_end, self._write_end = os.pipe()  # both not inheritable: vLLM gets neither
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                # By path and isolated: it needs the standard library only, from any working directory.
                [sys.executable, "-I", __file__, f"{grace_s:g}"],
                stdin=read_end,
                start_new_session=True,
            )
        except OSError as exc:  # pragma: no cover - no interpreter to start: vLLM runs unguarded
            _say(f"cannot start ({exc}); vLLM outlives a launcher killed with SIGKILL")
            self.proc = None
        finally:
            os.close(read_end)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._write_end, data)
        except OSError as exc:  # the guard died: vLLM runs unguarded, said once
            _say(f"lost ({exc}); vLLM outlives a launcher killed with SIGKILL")

    def watch(self, pgid: int) -> None:
        self._write(f"{pgid}\n".encode())

    def release(self) -> None:
        """vLLM's group was stopped by the launcher: the guard exits without touching it."""
        self._write(DONE)
        os.close(self._write_end)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
