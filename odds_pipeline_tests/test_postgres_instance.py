"""The instance a team runs: the same code location on a Postgres-backed Dagster instance.

Starts a throwaway PostgreSQL server (Debian's `postgresql` package; `scripts/ensure_postgres.sh`
installs it when missing), points a `dagster.yaml` at it (the committed instance settings plus the
`storage: postgres:` block of docs/postgres_instance.md), runs a cheap project asset on it and
reads the run and its materialization back from Postgres. Skips with a reason only where
PostgreSQL cannot be installed or started. SQLite stays the laptop default (data/dagster_home).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from odds_pipeline.definitions import defs

REPO_ROOT = Path(__file__).resolve().parent.parent
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure_postgres.sh"
COMMITTED_INSTANCE = REPO_ROOT / "data" / "dagster_home" / "dagster.yaml"
PG_USER = "postgres"  # created by Debian's postgresql package; the server refuses to run as root
DB_NAME = "odds_dagster"
PASSWORD_ENV = "DAGSTER_PG_PASSWORD"
ASSET = dg.AssetKey("simulated_market")
SMALL_SIM = {"ops": {"simulated_market": {"config": {"n_events": 4, "seed": 11}}}}


def _find_bin_dir() -> Path | None:
    def version(d: str) -> tuple[int, ...]:
        major = Path(d).parent.name
        return tuple(int(p) for p in major.split(".") if p.isdigit())

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.access(Path(d, "initdb"), os.X_OK) and os.access(Path(d, "pg_ctl"), os.X_OK):
            return Path(d)
    return None


@pytest.fixture(scope="module")
def pg_bin_dir() -> Path:
    found = _find_bin_dir()
    note = ""
    if found is None:
        # Normally already done by `make install`; the script never fails and is bounded here.
        try:
            ensured = subprocess.run(
                ["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=900
            )
            note = ensured.stderr.strip()
        except subprocess.TimeoutExpired:
            note = "ensure_postgres.sh timed out after 900 s"
        found = _find_bin_dir()
    if found is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
            "and scripts/ensure_postgres.sh could not install Debian's `postgresql` package "
            f"(needs root and apt-get): {note or 'no message'}"
        )
    return found


def _server_user() -> str | None:
    """None: run the server as ourselves. As root: an unprivileged system user (the server refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if created.returncode != 0:
            pytest.skip(f"running as root and could not create user {PG_USER!r}: {created.stderr}")
    return PG_USER


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PgServer:
    port: int
    db_name: str
    username: str = "postgres"
    hostname: str = "127.0.0.1"

    def connect(self):
        import psycopg2

        return psycopg2.connect(
            host=self.hostname,
            port=self.port,
            user=self.username,
            dbname=self.db_name,
            connect_timeout=10,
        )


@pytest.fixture(scope="module")
def postgres_server(pg_bin_dir: Path) -> Iterator[PgServer]:
    user = _server_user()
    # Not under pytest's tmp dir: that is 0700 root-owned, so the server user could not enter it.
    root = Path(tempfile.mkdtemp(prefix="odds_pg_"))
    data_dir, socket_dir, log_file = root / "data", root / "sock", root / "server.log"
    socket_dir.mkdir()
    if user is not None:
        pw = pwd.getpwnam(user)
        for p in (root, socket_dir):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    prefix = ["runuser", "-u", user, "--"] if user is not None else []

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args], cwd=root, capture_output=True, text=True, timeout=timeout
        )

    pg_ctl = str(pg_bin_dir / "pg_ctl")
    started = False
    try:
        init = run(
            str(pg_bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        start = None
        for _ in range(3):  # the free port can be taken between probing and binding: retry
            port = _free_port()
            options = (
                f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off"
            )
            start = run(
                pg_ctl,
                "-D",
                str(data_dir),
                "-l",
                str(log_file),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
                timeout=60,
            )
            started = True  # a failed or timed-out start may still leave a server: always stop
            if start.returncode == 0:
                break
            run(pg_ctl, "-D", str(data_dir), "stop", "-m", "immediate", "-w", "-t", "10")
            started = False
        assert start is not None
        if start.returncode != 0:
            log = log_file.read_text() if log_file.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}")
        created = subprocess.run(
            [
                str(pg_bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                DB_NAME,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if created.returncode != 0:
            pytest.fail(f"createdb failed:\n{created.stderr}")
        yield PgServer(port=port, db_name=DB_NAME)
    finally:
        if started:
            stop = run(pg_ctl, "-D", str(data_dir), "stop", "-m", "fast", "-w", "-t", "30")
            if stop.returncode != 0:
                run(pg_ctl, "-D", str(data_dir), "stop", "-m", "immediate", "-w", "-t", "10")
        shutil.rmtree(root, ignore_errors=True)


def _write_instance_yaml(home: Path, server: PgServer) -> None:
    """The committed instance settings (pools, run queue, telemetry) with Postgres storage."""
    config = yaml.safe_load(COMMITTED_INSTANCE.read_text())
    assert "storage" not in config  # SQLite stays the laptop default
    config["storage"] = {
        "postgres": {
            "postgres_db": {
                "hostname": server.hostname,
                "port": server.port,
                "username": server.username,
                "password": {"env": PASSWORD_ENV},
                "db_name": server.db_name,
                # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg (3); dagster-postgres ships
                # psycopg2-binary, so name that driver.
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_the_code_location_runs_on_a_postgres_backed_instance(
    postgres_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from dagster_postgres import (
        DagsterPostgresStorage,
        PostgresEventLogStorage,
        PostgresRunStorage,
    )

    # The server trusts local connections; the password still travels through the env-var syntax.
    monkeypatch.setenv(PASSWORD_ENV, "not-checked-with-trust-auth")
    home = tmp_path / "dagster_home"
    _write_instance_yaml(home, postgres_server)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.get_ref().storage, DagsterPostgresStorage)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        result = dg.materialize(
            # As the code location defines it, with its resources bound (the isolated state home).
            [defs.resolve_assets_def(ASSET)],
            instance=instance,
            run_config=SMALL_SIM,
        )
        assert result.success
        run_id = result.run_id

    # A fresh instance from the same dagster.yaml (as the webserver or the daemon would open it)
    # reads the run and the materialization back from Postgres.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [r.run_id for r in runs] == [run_id]
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(ASSET)
        assert event is not None and event.run_id == run_id
        metadata = event.asset_materialization.metadata
        assert metadata["seed"].value == 11
        assert metadata["dagster/row_count"].value > 0

    # And the rows really are in the Postgres database, not in a file next to dagster.yaml.
    with postgres_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs")
        assert cur.fetchall() == [(run_id, "SUCCESS")]
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (run_id, "ASSET_MATERIALIZATION"),
        )
        assert cur.fetchone()[0] == 1
    conn.close()
    assert not list(home.rglob("*.db"))
