"""`make dev` stops, all of it, on Ctrl-C or SIGTERM (issue #11).

Starts the `make dev` command line (`python -m odds_pipeline.devserver -w workspace.yaml ...`) on
a free port with a throwaway DAGSTER_HOME (a copy of the committed instance settings) and
ODDS_PIPELINE_HOME, in a session of its own, waits until the UI answers on /server_info, stops it
as a user or a supervisor does, and checks that every process of that session (the launcher,
`dagster dev`, webserver, daemon, code servers) is gone within HANG_GUARD_S and that it ended by
the signal it got (a shell shows 130 / 143).

* Ctrl-C: SIGINT to the whole foreground process group, as the terminal sends it;
* SIGTERM to the launcher alone, started with SIGINT ignored as `make dev &` in a script (or a
  supervisor that ignores SIGINT) starts it: plain `dagster dev` then ignores SIGTERM as well.

DEV_SHUTDOWN_COMMAND=dagster-dev runs the same checks against the old command line (plain
`dagster dev`); both cases fail there (exit status 0 on Ctrl-C; still running at the hang guard
after SIGTERM). A third test, without Dagster, checks the launcher's last resort: what ignores
the signals is SIGTERMed, then SIGKILLed, after the grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMITTED_INSTANCE = REPO_ROOT / "data" / "dagster_home" / "dagster.yaml"
COMMANDS = {
    "launcher": [sys.executable, "-m", "odds_pipeline.devserver"],
    "dagster-dev": [sys.executable, "-m", "dagster", "dev"],  # the old `make dev`
}
COMMAND = os.environ.get("DEV_SHUTDOWN_COMMAND", "launcher")
START_S = 240  # the UI answers (2 shared cores, other tests running)
HANG_GUARD_S = 30  # every process gone after the signal

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process table from Linux /proc"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_members(sid: int) -> dict[int, str]:
    """pid -> command line of the live (not zombie) processes of session `sid`."""
    members = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            members[int(name)] = cmd.replace(b"\0", b" ").decode(errors="replace")[:160]
    return members


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _default_signals() -> None:
    os.setsid()  # its own session and process group, the one a terminal's Ctrl-C goes to
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sigint_ignored() -> None:
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # `make dev &` in a script: no job control
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class DevServer:
    proc: subprocess.Popen
    base_url: str
    log: Path

    @property
    def sid(self) -> int:
        return self.proc.pid


def _start(tmp_path: Path, preexec: Callable[[], None]) -> DevServer:
    dagster_home, state_home = tmp_path / "dagster_home", tmp_path / "state_home"
    dagster_home.mkdir()
    state_home.mkdir()
    shutil.copy(COMMITTED_INSTANCE, dagster_home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), ODDS_PIPELINE_HOME=str(state_home))
    for name in ("ODDS_API_KEY", "ODDS_FEED", "ALERT_WEBHOOK_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    log = tmp_path / "dev.log"
    for _attempt in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*COMMANDS[COMMAND], "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
        server = DevServer(proc, base, log)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5):
                    return server
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or "address already in use" in _log_tail(log).lower():
                break
            time.sleep(1)
        in_use = "address already in use" in _log_tail(log).lower()
        _kill_session(server)
        if in_use:
            continue
        if proc.returncode is None or proc.returncode == -signal.SIGKILL:
            pytest.skip(
                f"the Dagster UI did not answer within {START_S} s (a slow or busy machine); "
                f"log tail:\n{_log_tail(log)}"
            )
        pytest.fail(
            f"`{COMMAND}` exited {proc.returncode} before the UI answered:\n{_log_tail(log)}"
        )
    pytest.fail(f"could not bind a free port; log tail:\n{_log_tail(log)}")


def _kill_session(server: DevServer) -> None:
    """Teardown: SIGKILL whatever is left of the session."""
    for pid in _session_members(server.sid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=10)


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[Callable[[Callable[[], None]], DevServer]]:
    started: list[DevServer] = []

    def start(preexec: Callable[[], None]) -> DevServer:
        server = _start(tmp_path, preexec)
        started.append(server)
        return server

    yield start
    for server in started:
        _kill_session(server)


def _stop_and_check(server: DevServer, send: Callable[[], None], signum: int) -> None:
    before = _session_members(server.sid)
    assert len(before) >= 5, (
        f"expected launcher, dagster dev, webserver, daemon, code server(s): {before}"
    )
    started = time.monotonic()
    send()
    left = before
    while time.monotonic() - started < HANG_GUARD_S:
        server.proc.poll()  # reap it: an exited, unreaped leader is a zombie, not "running"
        left = _session_members(server.sid)
        if not left and server.proc.returncode is not None:
            break
        time.sleep(0.2)
    took = time.monotonic() - started
    assert not left, (
        f"{len(left)} of {len(before)} processes still running {HANG_GUARD_S} s after "
        f"{signal.Signals(signum).name}:\n"
        + "\n".join(f"  {pid} {cmd}" for pid, cmd in sorted(left.items()))
        + f"\nlog tail:\n{_log_tail(server.log)}"
    )
    assert server.proc.returncode in (-signum, 128 + signum), (
        f"exit status {server.proc.returncode} after {signal.Signals(signum).name} "
        f"(expected to end by that signal: a shell shows {128 + signum}); "
        f"everything stopped in {took:.1f} s"
    )
    with (
        pytest.raises(OSError),
        socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), timeout=2),
    ):
        pass  # the UI port is free again
    print(f"{COMMAND}: all {len(before)} processes gone {took:.1f} s after the signal")


def test_ctrl_c_stops_everything(start_dev: Callable[[Callable[[], None]], DevServer]) -> None:
    server = start_dev(_default_signals)
    _stop_and_check(server, lambda: os.killpg(server.proc.pid, signal.SIGINT), signal.SIGINT)


def test_sigterm_stops_everything_even_with_sigint_ignored(
    start_dev: Callable[[Callable[[], None]], DevServer],
) -> None:
    server = start_dev(_sigint_ignored)
    _stop_and_check(server, lambda: server.proc.send_signal(signal.SIGTERM), signal.SIGTERM)


# --- the launcher's last resort, without Dagster: what ignores the signals is killed ----------

_DEAF_DEV = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import os, signal, time; os.setsid(); "
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
time.sleep(0.5)
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""

_LAUNCH_DEAF = """
import sys
from odds_pipeline.devserver import Launcher
launcher = Launcher([], grace_s=1.0)
launcher.command = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
sys.exit(launcher.run())
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_launcher_kills_what_ignores_the_signals(tmp_path: Path) -> None:
    """A `dagster dev` deaf to SIGINT/SIGTERM, with a child in a session of its own that ignores
    SIGTERM: after the grace period the launcher SIGTERMs, then SIGKILLs, both."""
    ready = tmp_path / "pids"
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH_DEAF, _DEAF_DEV, str(ready)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        pids = [int(p) for p in ready.read_text().split()]
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=HANG_GUARD_S)
        took = time.monotonic() - started
        stderr = proc.stderr.read()
        assert proc.returncode == -signal.SIGINT, stderr
        assert not [pid for pid in pids if _running(pid)], stderr
        assert "sending SIGTERM" in stderr and "sending SIGKILL" in stderr, stderr
        assert took < 1.0 + 3.0 + 5.0, f"took {took:.1f} s: {stderr}"
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
