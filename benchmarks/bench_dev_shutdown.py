"""`make dev` shutdown (issue #11): seconds until every Dagster process is gone.

    python benchmarks/bench_dev_shutdown.py [--runs 3] [--only before|after] [--guard 75]

Starts the dev server for this code location on a free port with a throwaway DAGSTER_HOME (a copy
of data/dagster_home/dagster.yaml) and ODDS_PIPELINE_HOME, waits until the UI answers and the
code location is loaded, then stops it in one of two ways:

* ``sigint_group``: SIGINT to its whole process group, as Ctrl-C in the terminal does;
* ``sigterm_leader``: SIGTERM to the started process alone, as a supervisor does.

Timed: until the started process exits (``leader_exit_s``) and until it and every process of its
tree and process group(s) is gone (``all_gone_s``; ``null`` = still alive at the guard, then
SIGKILLed). ``before`` is plain `dagster dev` (the old `make dev` command line), ``after`` is
`python -m odds_pipeline.devserver` (the new one). Takes about 10 minutes with --runs 3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import REPO_ROOT, emit

from odds_pipeline.devserver import alive, process_tree

COMMITTED_INSTANCE = REPO_ROOT / "data" / "dagster_home" / "dagster.yaml"
DEV_ARGS = ["-w", "workspace.yaml", "-h", "127.0.0.1", "-p"]
COMMANDS = {
    "before": [sys.executable, "-m", "dagster", "dev"],
    "after": [sys.executable, "-m", "odds_pipeline.devserver"],
}
CASES = {  # how it is stopped: (signal, to the whole process group?)
    "sigint_group": (signal.SIGINT, True),  # Ctrl-C in the terminal
    "sigterm_leader": (signal.SIGTERM, False),  # a supervisor, `kill PID`
    "sigint_leader": (signal.SIGINT, False),  # `kill -INT PID`
    "sigkill_leader": (signal.SIGKILL, False),  # OOM killer, `timeout -s KILL`
}
READY_S = 240

_LOCATION_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    """In the child: its own session; SIGINT/SIGTERM as a terminal would give them."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sigint_ignored() -> None:
    """In the child: SIGINT ignored, as for `make dev &` in a script (no job control)."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _loaded(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/server_info", timeout=5):
            pass
        req = urllib.request.Request(
            f"{base}/graphql",
            data=json.dumps({"query": _LOCATION_QUERY}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return False


def _label(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(c.decode(errors="replace") for c in cmd)
    for key, name in (
        ("odds_pipeline.devserver", "launcher"),
        ("dagster_webserver", "webserver"),
        ("dagster._daemon", "daemon"),
        ("code-server start", "code_server"),
        ("api grpc", "api_grpc"),
        ("execute_run", "run_worker"),
        ("dagster dev", "dagster_dev"),
    ):
        if key in text:
            return name
    return text[:60]


@contextlib.contextmanager
def _ui_tab(port: int):
    """What an open UI tab holds: the GraphQL websocket with its location-change subscription."""
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/graphql"
    with connect(url, subprotocols=["graphql-ws"], open_timeout=30) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ws.recv(timeout=30)  # connection_ack
        query = "subscription { locationStateChangeEvents { __typename } }"
        ws.send(json.dumps({"id": "1", "type": "start", "payload": {"query": query}}))

        def drain() -> None:
            with contextlib.suppress(Exception):
                while True:
                    ws.recv()

        threading.Thread(target=drain, daemon=True).start()
        yield


def trial(
    which: str, case: str, guard_s: float, ui_client: bool = False, sigint_ignored: bool = False
) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_dev_shutdown_"))
    dagster_home, state_home = tmp / "dagster_home", tmp / "state"
    dagster_home.mkdir()
    state_home.mkdir()
    shutil.copy(COMMITTED_INSTANCE, dagster_home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), ODDS_PIPELINE_HOME=str(state_home))
    port = _free_port()
    log = tmp / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*COMMANDS[which], *DEV_ARGS, str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_sigint_ignored if sigint_ignored else _default_signals,
        )
    result: dict[str, object] = {"which": which, "case": case}
    tracked: dict[tuple[int, str], str] = {}
    groups = {proc.pid}
    try:
        start = time.monotonic()
        while not _loaded(f"http://127.0.0.1:{port}"):
            if proc.poll() is not None or time.monotonic() - start > READY_S:
                result["error"] = f"not ready (exit {proc.returncode}); log in {log}"
                return result
            time.sleep(1)
        result["ready_s"] = round(time.monotonic() - start, 1)
        time.sleep(3)  # the daemon's first ticks
        stack = contextlib.ExitStack()
        if ui_client:
            stack.enter_context(_ui_tab(port))
            time.sleep(1)

        def snapshot() -> None:
            root = proc.pid if proc.returncode is None else -1
            for key in process_tree(root, groups):
                if key not in tracked:
                    tracked[key] = _label(key[0])
                    with contextlib.suppress(OSError):
                        groups.add(os.getpgid(key[0]))

        snapshot()
        result["processes_before"] = sorted(tracked.values())
        gone_at: dict[tuple[int, str], float] = {}
        t0 = time.monotonic()
        sig, to_group = CASES[case]
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        leader_exit = all_gone = None
        while time.monotonic() - t0 < guard_s:
            now = time.monotonic() - t0
            if leader_exit is None and proc.poll() is not None:
                leader_exit = now
            snapshot()
            live = alive(tracked)
            for key in tracked:
                if key not in live and key not in gone_at:
                    gone_at[key] = now
            if not live and leader_exit is not None:
                all_gone = now
                break
            time.sleep(0.1)
        stack.close()
        survivors = alive(tracked)
        result.update(
            leader_exit_s=None if leader_exit is None else round(leader_exit, 2),
            all_gone_s=None if all_gone is None else round(all_gone, 2),
            returncode=proc.returncode,
            survivors_at_guard=sorted(tracked[k] for k in survivors),
            gone_at_s={
                f"{tracked[k]}:{k[0]}": round(v, 2) for k, v in sorted(gone_at.items(), key=str)
            },
            started_during_shutdown=sorted(
                tracked[k] for k in tracked if tracked[k] not in result["processes_before"]
            ),
        )
        return result
    finally:
        for key in alive(tracked):
            with contextlib.suppress(OSError):
                os.kill(key[0], signal.SIGKILL)
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if "error" not in result:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=sorted(COMMANDS))
    parser.add_argument("--cases", default="sigint_group,sigterm_leader", help=", ".join(CASES))
    parser.add_argument(
        "--ui-client",
        action="store_true",
        help="hold a UI tab's GraphQL websocket subscription open while stopping",
    )
    parser.add_argument(
        "--sigint-ignored",
        action="store_true",
        help="start it with SIGINT ignored, as `make dev &` in a script does",
    )
    parser.add_argument("--guard", type=float, default=75.0, help="seconds before SIGKILL")
    args = parser.parse_args()
    figures: dict[str, object] = {
        "guard_s": args.guard,
        "runs": args.runs,
        "ui_client": args.ui_client,
        "sigint_ignored": args.sigint_ignored,
    }
    for which in [args.only] if args.only else list(COMMANDS):
        for case in args.cases.split(","):
            trials = [
                trial(which, case, args.guard, args.ui_client, args.sigint_ignored)
                for _ in range(args.runs)
            ]
            print(json.dumps(trials[-1]), file=sys.stderr, flush=True)

            def med(key: str, trials: list[dict[str, object]] = trials) -> float | None:
                vals = [t.get(key) for t in trials]
                if any(v is None for v in vals):
                    return None  # a run hit the guard: no finite median
                return round(statistics.median(vals), 2)

            figures[f"{which}.{case}"] = {
                "command": " ".join(Path(c).name if "/" in c else c for c in COMMANDS[which]),
                "leader_exit_s": [t.get("leader_exit_s") for t in trials],
                "all_gone_s": [t.get("all_gone_s") for t in trials],
                "median_all_gone_s": med("all_gone_s"),
                "returncode": [t.get("returncode") for t in trials],
                "survivors_at_guard": [t.get("survivors_at_guard") for t in trials],
                "trials": trials,
            }
    figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    emit(figures)


if __name__ == "__main__":
    main()
