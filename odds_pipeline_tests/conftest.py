"""Shared fixtures: every test gets its own state home, so nothing touches the project's data/."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLES = REPO_ROOT / "data" / "samples"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real odds data not found at {SHARED_DATA} (CI always has it)"
)


@pytest.fixture(autouse=True)
def isolated_state_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("state_home")
    monkeypatch.setenv("ODDS_PIPELINE_HOME", str(home))
    monkeypatch.delenv("ODDS_API_KEY", raising=False)
    monkeypatch.delenv("ODDS_FEED", raising=False)
    return home
