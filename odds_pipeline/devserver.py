"""`make dev`: `dagster dev` that stops, all of it, within seconds of Ctrl-C or SIGTERM.

    python -m odds_pipeline.devserver [--grace-period S] [dagster dev options...]

What plain `dagster dev` (1.13) does, measured (issue #11, BENCHMARKS.md):

* Started with SIGINT ignored (`make dev &` in a script, some supervisors), it ignores SIGTERM
  too: `setup_interrupt_handlers()` gives SIGTERM the SIGINT disposition, SIG_IGN. Neither
  signal, to it or to its process group, stops it or its code servers.
* When it dies without its orderly shutdown (SIGKILL, OOM), its webserver, daemon and code
  servers keep running.
* Its orderly shutdown (SIGINT / SIGTERM, 8-10 s here) is sequential with long limits: it waits
  up to 60 s for the webserver, then up to 60 s for the daemon, then asks the code servers to stop
  without waiting for them (each waits up to 60 s for RPCs in flight); it exits 0.

This launcher starts `dagster dev` (with SIGINT and SIGTERM at their defaults) in a process group
of its own, so Ctrl-C reaches only the launcher. On SIGINT, SIGTERM or SIGHUP it interrupts
`dagster dev` once (its own orderly shutdown: webserver, daemon, code servers), waits
``--grace-period`` seconds (default 10) for it to finish, then sends SIGTERM and, 3 s later,
SIGKILL to whatever is left of that group and of every process it started. It then ends by the
signal it received (a shell shows 130 for Ctrl-C, 143 for SIGTERM), as an interrupted program
should; when `dagster dev` ends by itself, the launcher exits with its code. A second Ctrl-C
skips the grace period. If the launcher itself is killed, `dagster dev` gets SIGINT (Linux
PR_SET_PDEATHSIG). It sets DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD=5 (unless set) so that a stopping
code server waits 5 s, not 60 s, for RPCs in flight. The webserver, daemon and the printed UI
address are unchanged.

Standard library only (no Dagster import): it only runs and stops the `dagster dev` process tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

DEFAULT_GRACE_S = 10.0  # for `dagster dev`'s own shutdown before its processes are terminated
TERM_GRACE_S = 3.0  # between SIGTERM and SIGKILL for what is left
POLL_S = 0.2
SNAPSHOT_EVERY_S = 2.0  # how often the launcher notes the processes `dagster dev` started
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A code server that is told to stop waits this long for RPCs in flight (Dagster's default: the
# largest gRPC timeout, 60 s); a value set by the caller is kept.
GRPC_SHUTDOWN_GRACE_ENV = {"DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": "5"}
_PR_SET_PDEATHSIG = 1

ProcKey = tuple[int, str]  # (pid, start time): a pid alone may be reused


# --- the process tree (Linux /proc; elsewhere only the process group is used) ----------------


def _stat(pid: int) -> tuple[int, int, str, str] | None:
    """(ppid, pgid, state, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # after "pid (comm) "
    state, ppid, pgid, start = fields[0], int(fields[1]), int(fields[2]), fields[19]
    if state in ("Z", "X"):
        return None
    return ppid, pgid, state, start


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def process_tree(root: int, pgids: Iterable[int] = ()) -> set[ProcKey]:
    """Live processes descending from `root` (by parent), plus the members of `pgids`."""
    groups = set(pgids)
    table: dict[int, tuple[int, int, str]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None:
            table[pid] = (st[0], st[1], st[3])
    children: dict[int, list[int]] = {}
    for pid, (ppid, _pgid, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = {pid for pid, (_p, pgid, _s) in table.items() if pgid in groups}
    stack = [root] if root in table else []
    stack += list(found)
    while stack:
        pid = stack.pop()
        if pid in table:
            found.add(pid)
        for child in children.get(pid, ()):
            if child not in found:
                stack.append(child)
    return {(pid, table[pid][2]) for pid in found}


def alive(keys: Iterable[ProcKey]) -> set[ProcKey]:
    """Those of `keys` still running (same pid and start time, not a zombie)."""
    out = set()
    for pid, start in keys:
        st = _stat(pid)
        if st is not None and st[3] == start:
            out.add((pid, start))
    return out


def _signal_all(keys: Iterable[ProcKey], pgid: int | None, sig: int) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid, _start in alive(keys):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for kill(0); /proc tells them apart where it exists.
    if Path("/proc").is_dir():
        return any(st is not None and st[1] == pgid for st in map(_stat, _all_pids()))
    return True


# --- the launcher ------------------------------------------------------------------------------


def _child_setup() -> None:
    """In `dagster dev` before exec: default SIGINT/SIGTERM, and a SIGINT if the launcher dies."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))


def _log(message: str) -> None:
    print(f"[odds_pipeline.devserver] {message}", file=sys.stderr, flush=True)


class Launcher:
    def __init__(self, dagster_args: Sequence[str], grace_s: float = DEFAULT_GRACE_S) -> None:
        self.command = [sys.executable, "-m", "dagster", "dev", *dagster_args]
        self.grace_s = grace_s
        self.requested: list[int] = []  # stop signals received, in order
        self.proc: subprocess.Popen | None = None
        self.known: set[ProcKey] = set()

    def _snapshot(self, pgid: int) -> None:
        """Note the processes of `dagster dev`'s group and tree (a reaped pid may be reused)."""
        assert self.proc is not None
        root = self.proc.pid if self.proc.returncode is None else -1
        self.known |= process_tree(root, [pgid])

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.requested.append(signum)

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            # An inherited "ignore SIGINT" (a `cmd &` in a script) is kept for the launcher.
            if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            signal.signal(sig, self._on_signal)
        env = {**GRPC_SHUTDOWN_GRACE_ENV, **os.environ}
        self.proc = subprocess.Popen(
            self.command,
            env=env,
            stdin=subprocess.DEVNULL,
            process_group=0,  # its own group: the terminal's Ctrl-C reaches only the launcher
            preexec_fn=_child_setup,
        )
        pgid = self.proc.pid
        next_snapshot = 0.0
        while not self.requested and self.proc.poll() is None:
            if time.monotonic() >= next_snapshot:
                self._snapshot(pgid)
                next_snapshot = time.monotonic() + SNAPSHOT_EVERY_S
            time.sleep(POLL_S)
        if self.requested:
            self._stop(pgid)
            return self._exit_by_signal(self.requested[0])
        # `dagster dev` ended by itself: stop what it left behind, pass its exit status on.
        self._sweep(pgid)
        code = self.proc.returncode
        return 128 - code if code < 0 else code

    def _stop(self, pgid: int) -> None:
        assert self.proc is not None
        first = signal.Signals(self.requested[0]).name
        _log(
            f"{first}: stopping Dagster (up to {self.grace_s:g} s; Ctrl-C again to stop it at once)"
        )
        self._snapshot(pgid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)  # `dagster dev`'s own orderly shutdown
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and len(self.requested) == 1:
            if self.proc.poll() is not None and not _group_alive(pgid):
                break
            self._snapshot(pgid)
            time.sleep(POLL_S)
        self._sweep(pgid)

    def _sweep(self, pgid: int) -> None:
        """SIGTERM, then SIGKILL, whatever is left of the group and the processes it started."""
        assert self.proc is not None
        self._snapshot(pgid)
        for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
            left = alive(self.known)
            if not left and not _group_alive(pgid):
                break
            if sig == signal.SIGKILL or len(left) > 0:
                names = ", ".join(str(pid) for pid, _ in sorted(left)) or f"group {pgid}"
                _log(f"sending {signal.Signals(sig).name} to {names}")
            _signal_all(self.known, pgid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.proc.poll()  # reap `dagster dev` so it does not linger as a zombie
                if not alive(self.known) and not _group_alive(pgid):
                    break
                time.sleep(POLL_S)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    @staticmethod
    def _exit_by_signal(signum: int) -> int:
        """End the way an interrupted program should: by that signal (the shell shows 128+N)."""
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        time.sleep(1)  # the signal is delivered before this returns
        return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    grace_s = float(os.environ.get("DAGSTER_DEV_GRACE_PERIOD", DEFAULT_GRACE_S))
    if args[:1] == ["--grace-period"] and len(args) > 1:
        grace_s, args = float(args[1]), args[2:]
    elif args and args[0].startswith("--grace-period="):
        grace_s, args = float(args[0].split("=", 1)[1]), args[1:]
    return Launcher(args, grace_s=grace_s).run()


if __name__ == "__main__":
    sys.exit(main())
