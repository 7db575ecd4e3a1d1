"""The code location loads fast, light, and shows what an engineer needs in the UI."""

import subprocess
import sys

import dagster as dg

from odds_pipeline.definitions import defs

INGESTION = {
    "football_data_odds",
    "odds_api_snapshots",
    "sbr_odds",
    "simulated_market",
    "odds_api_live",
}
CANONICAL = {"odds_quotes", "events", "results", "rejected_quotes"}


def test_definitions_validate():
    dg.Definitions.validate_loadable(defs)


def test_loading_the_location_imports_no_heavy_library():
    code = (
        "import sys, time; t=time.perf_counter(); import odds_pipeline.definitions; "
        "heavy=[m for m in ('torch','mlflow','optuna','sklearn') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ingestion_group_has_descriptions_kinds_owners_and_checks():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= INGESTION | CANONICAL
    for name in INGESTION | CANONICAL:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "ingestion", name
        assert node.description, name
        assert node.owners == ["team:odds-data"], name
        assert node.kinds, name
    checked = {key.asset_key.to_user_string() for key in graph.asset_check_keys}
    assert checked >= INGESTION and "odds_quotes" in checked


def test_writers_share_the_duckdb_pool():
    for name in INGESTION:
        assets_def = defs.resolve_assets_def(name)
        assert assets_def.op.pool == "duckdb_writer", name


def test_live_poll_schedule_is_stopped_by_default():
    schedule = defs.resolve_schedule_def("odds_api_live_poll_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_make_run_files_its_run_under_the_job_in_the_ui():
    """The UI lists a job's runs by the `.dagster/repository` label; `make run` sets it."""
    import json
    import re

    import yaml

    from odds_pipeline.definitions import defs
    from odds_pipeline_tests.conftest import REPO_ROOT

    makefile = (REPO_ROOT / "Makefile").read_text()
    tags = json.loads(re.search(r"--tags '(\{.*?\})'", makefile).group(1))
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]["location_name"]
    assert tags[".dagster/repository"] == f"{defs.get_repository_def().name}@{location}"
