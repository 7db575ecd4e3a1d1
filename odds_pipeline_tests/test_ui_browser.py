"""The Dagster UI in a real browser: headless Debian Chromium driven by selenium.

Starts `dagster dev` for this code location (webserver + daemon: the committed instance settings
queue runs, and the daemon's QueuedRunCoordinator hands them to the default run launcher, which
runs them in a subprocess) on 127.0.0.1 with a throwaway DAGSTER_HOME and ODDS_PIPELINE_HOME, then
checks what a user sees: the asset graph renders, an asset page lists its checks, the
`football_data_odds` Launchpad opens without a config error and materializes, and a failed run
shows its one-line error.

Needs Debian's `chromium` and `chromium-driver` (`scripts/ensure_chromium.sh`, run by
`make install`, installs them when missing). Skips with a reason only where they cannot be
installed. On failure each test leaves a screenshot under its pytest tmp_path (the path is in the
failure's notes); a few passing tests keep one too, to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
from urllib.parse import quote

import pytest

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # a dev dependency: `pip install -e '.[dev]'`
    pytest.skip("selenium is not installed (pip install -e '.[dev]')", allow_module_level=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure_chromium.sh"
COMMITTED_INSTANCE = REPO_ROOT / "data" / "dagster_home" / "dagster.yaml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

SERVER_START_S = 120  # webserver up and the code location loaded
UI_WAIT_S = 60  # a page or a dialog renders (2 shared cores, other tests running)
RUN_WAIT_S = 240  # a launched run reaches a terminal status
TERMINAL_STATUSES = ("Success", "Failure", "Canceled")
APP_ERRORS = ("Unexpected GraphQL error", "Something went wrong")


# --- the browser and the server --------------------------------------------------------------


def _have_chromium() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@pytest.fixture(scope="module")
def chromium() -> None:
    note = ""
    if not _have_chromium():
        # Normally already done by `make install`; the script never fails and is bounded here.
        try:
            ensured = subprocess.run(
                ["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=900
            )
            note = ensured.stderr.strip()
        except subprocess.TimeoutExpired:
            note = "ensure_chromium.sh timed out after 900 s"
    if not _have_chromium():
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} not found and scripts/ensure_chromium.sh could not "
            f"install Debian's `chromium` and `chromium-driver` (needs root and apt-get): "
            f"{note or 'no message'}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop `dagster dev` and everything it started (webserver, daemon, code servers, runs)."""
    # Ctrl-C first: `dagster dev` then shuts its webserver, daemon and code servers down itself.
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    # Then whatever is left of its process group (the leader too when it did not exit in time).
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(grace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _default_signals() -> None:
    """In the child: SIGINT/SIGTERM as a terminal would give them (a parent may ignore them)."""
    os.setsid()  # its own process group: teardown stops all of it
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


_LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _location_status(base: str) -> tuple[bool, str]:
    """(all locations loaded, a word on what is not yet)."""
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": _LOCATION_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        data = json.load(resp)["data"]["workspaceOrError"]
    entries = data.get("locationEntries") or []
    for entry in entries:
        loaded = entry.get("locationOrLoadError") or {}
        if loaded.get("__typename") == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load:\n{loaded.get('message')}")
    pending = [e["name"] for e in entries if e.get("loadStatus") != "LOADED"]
    if not entries:
        return False, "no code location yet"
    return not pending, f"loading: {pending}"


@dataclass(frozen=True)
class DagsterUI:
    base_url: str
    dagster_home: Path
    state_home: Path
    log: Path


@pytest.fixture(scope="module")
def dagster_ui(chromium: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    dagster_home = tmp_path_factory.mktemp("ui_dagster_home")
    state_home = tmp_path_factory.mktemp("ui_state_home")
    shutil.copy(COMMITTED_INSTANCE, dagster_home / "dagster.yaml")
    # The "Join the Dagster community" dialog covers the page on a fresh instance on localhost.
    (dagster_home / ".nux").mkdir()
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    log = dagster_home / "dagster-dev.log"

    env = dict(os.environ)
    for name in ("ODDS_API_KEY", "ODDS_FEED", "ALERT_WEBHOOK_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    env.update(DAGSTER_HOME=str(dagster_home), ODDS_PIPELINE_HOME=str(state_home))

    proc: subprocess.Popen | None = None
    try:
        for _attempt in range(3):  # the free port can be taken between probing and binding
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            env["DAGSTER_UI_URL"] = base
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "dagster",
                        "dev",
                        "-w",
                        "workspace.yaml",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                    ],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_default_signals,
                )
            deadline = time.monotonic() + SERVER_START_S
            ready, why = False, "webserver not answering"
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"{base}/server_info", timeout=5):
                        pass
                    ready, why = _location_status(base)
                except (urllib.error.URLError, OSError, ValueError, KeyError):
                    pass
                if ready:
                    break
                time.sleep(1)
            if ready:
                break
            exited = proc.poll() is not None
            _stop_group(proc)
            if exited and "address already in use" in _log_tail(log).lower():
                continue
            pytest.fail(
                f"`dagster dev` did not become ready within {SERVER_START_S} s "
                f"({'exited ' + str(proc.returncode) if exited else why}); log tail:\n"
                f"{_log_tail(log)}"
            )
        else:
            pytest.fail(f"`dagster dev` could not bind a free port; log tail:\n{_log_tail(log)}")
        yield DagsterUI(base_url=base, dagster_home=dagster_home, state_home=state_home, log=log)
    finally:
        if proc is not None:
            _stop_group(proc)


@pytest.fixture(scope="module")
def browser(dagster_ui: DagsterUI) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--disable-gpu",
        "--no-first-run",
    ):
        options.add_argument(arg)
    service = Service(
        str(CHROMEDRIVER), log_output=str(dagster_ui.dagster_home / "chromedriver.log")
    )
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        pytest.fail(f"could not start headless Chromium with {CHROMEDRIVER}: {exc.msg}")
    driver.set_page_load_timeout(UI_WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def screenshot_on_failure(driver: WebDriver, tmp_path: Path, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        shot = tmp_path / f"{name}-failure.png"
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(shot))
            exc.add_note(f"screenshot: {shot} (page: {driver.current_url})")
        raise


def wait_for(
    driver: WebDriver, what: str, condition: Callable[[WebDriver], object], timeout=UI_WAIT_S
):
    """WebDriverWait with a message that says what did not appear."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, f"{what} (waited {timeout} s)")


def _xpath_literal(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'


def graph_label(driver: WebDriver, name: str) -> WebElement | None:
    """A node or group label drawn in the asset graph (an SVG foreignObject), when displayed."""
    for el in driver.find_elements(
        By.XPATH,
        f"//*[local-name()='foreignObject']//*[normalize-space(text())={_xpath_literal(name)}]",
    ):
        if el.is_displayed():
            return el
    return None


def displayed_text(driver: WebDriver, text: str) -> WebElement | None:
    """The first displayed element whose own text is exactly `text`."""
    for el in driver.find_elements(
        By.XPATH, f"//*[normalize-space(text())={_xpath_literal(text)}]"
    ):
        if el.is_displayed():
            return el
    return None


def assert_no_app_error(driver: WebDriver) -> None:
    body = driver.find_element(By.TAG_NAME, "body").text
    shown = [e for e in APP_ERRORS if e in body]
    assert not shown, f"the UI shows an application error: {shown}"


def open_launchpad(driver: WebDriver, base: str, asset: str) -> WebElement:
    """From the asset's page: the Materialize button's dropdown -> "Open launchpad"."""
    driver.get(f"{base}/assets/{asset}")
    materialize = wait_for(
        driver,
        f"the Materialize button on the {asset} page",
        lambda d: next(
            (
                b
                for b in d.find_elements(By.XPATH, "//button[normalize-space(.)='Materialize']")
                if b.is_displayed() and b.is_enabled()
            ),
            None,
        ),
    )
    dropdown = materialize.find_element(By.XPATH, "../following-sibling::*[1]//button")
    dropdown.click()
    wait_for(
        driver,
        "the 'Open launchpad' menu item",
        lambda d: displayed_text(d, "Open launchpad"),
    ).click()
    dialog = wait_for(
        driver,
        "the Launchpad dialog",
        lambda d: next(
            (
                el
                for el in d.find_elements(By.XPATH, "//*[@role='dialog']")
                if el.is_displayed() and "Launchpad" in el.text
            ),
            None,
        ),
    )
    # The editor starts empty and is scaffolded with the asset's default config once loaded.
    wait_for(
        driver,
        f"the Launchpad config editor scaffolded with {asset}'s config",
        lambda d: f"{asset}:" in editor_value(d),
    )
    return dialog


def editor_value(driver: WebDriver) -> str:
    return driver.execute_script(
        "const cm = document.querySelector('[role=dialog] .CodeMirror');"
        "return cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '';"
    )


def set_editor_value(driver: WebDriver, text: str) -> None:
    driver.execute_script(
        "document.querySelector('[role=dialog] .CodeMirror').CodeMirror.setValue(arguments[0]);",
        text,
    )


def launchpad_state(driver: WebDriver, dialog: WebElement) -> tuple[str, bool]:
    """(what the Errors panel says, whether the launch button is enabled), once it is stable."""

    def observe() -> tuple[str, bool] | None:
        titles = dialog.find_elements(By.XPATH, ".//div[normalize-space(text())='Errors']")
        launch = dialog.find_elements(By.XPATH, ".//button[normalize-space(.)='Materialize']")
        if not titles or not launch:
            return None
        panel = titles[0].find_element(By.XPATH, "..").text
        errors = panel.split("\n", 1)[1].strip() if "\n" in panel else ""
        return errors, launch[-1].is_enabled()

    last: tuple[str, bool] | None = None

    def settled(_d: WebDriver) -> tuple[str, bool] | None:
        nonlocal last
        now = observe()
        if now is not None and now == last:
            return now
        last = now
        return None

    wait_for(driver, "the Launchpad's Errors panel and launch button", lambda d: observe())
    time.sleep(1)  # config validation is a round trip: let the first answer land
    return WebDriverWait(driver, UI_WAIT_S, poll_frequency=1.0).until(
        settled, f"the Launchpad's Errors panel to settle (waited {UI_WAIT_S} s)"
    )


def launch(driver: WebDriver, dialog: WebElement) -> str:
    """Click the Launchpad's launch button; returns the run page URL it navigates to."""
    dialog.find_elements(By.XPATH, ".//button[normalize-space(.)='Materialize']")[-1].click()
    wait_for(driver, "the run page after launching", lambda d: "/runs/" in d.current_url)
    return driver.current_url


def wait_for_run_end(driver: WebDriver) -> str:
    """The run page's status once terminal (the page updates live; reloaded once a minute)."""
    deadline = time.monotonic() + RUN_WAIT_S
    reloaded = time.monotonic()
    while time.monotonic() < deadline:
        for status in TERMINAL_STATUSES:
            if displayed_text(driver, status) is not None:
                return status
        if time.monotonic() - reloaded > 60:
            driver.refresh()
            reloaded = time.monotonic()
        time.sleep(1)
    raise AssertionError(f"the run did not end within {RUN_WAIT_S} s ({driver.current_url})")


# --- tests -----------------------------------------------------------------------------------

GRAPH_ASSETS = {
    "odds_quotes": "ingestion",
    "lstm_candidate": "training",
    "lstm_champion": "registry",
}


def test_asset_graph_renders(browser: WebDriver, dagster_ui: DagsterUI, tmp_path: Path) -> None:
    base = dagster_ui.base_url
    with screenshot_on_failure(browser, tmp_path, "asset-graph"):
        # Global lineage: the asset groups, collapsed.
        browser.get(f"{base}/asset-groups")
        for group in sorted(set(GRAPH_ASSETS.values())):
            wait_for(
                browser,
                f"group {group!r} in the global asset graph",
                lambda d, g=group: graph_label(d, g),
            )
        assert_no_app_error(browser)
        browser.save_screenshot(str(tmp_path / "asset-graph-groups.png"))

        # Each asset's node, through the graph's selection filter (its group expanded on click).
        for asset, group in GRAPH_ASSETS.items():
            browser.get(f"{base}/asset-groups~{quote(f'key:{asset}')}/")
            wait_for(
                browser,
                f"node {asset!r} or its group {group!r} in the filtered asset graph",
                lambda d, a=asset, g=group: graph_label(d, a) or graph_label(d, g),
            )
            if graph_label(browser, asset) is None:
                graph_label(browser, group).click()  # a collapsed group node: expand it
            node = wait_for(
                browser, f"node {asset!r} in the asset graph", lambda d, a=asset: graph_label(d, a)
            )
            assert node.text.strip() == asset
            assert_no_app_error(browser)
        browser.save_screenshot(str(tmp_path / "asset-graph-node.png"))


def test_asset_page_lists_its_checks(
    browser: WebDriver, dagster_ui: DagsterUI, tmp_path: Path
) -> None:
    with screenshot_on_failure(browser, tmp_path, "asset-checks"):
        browser.get(f"{dagster_ui.base_url}/assets/lstm_candidate?view=checks")
        for check in ("beats_baseline", "calibration"):
            wait_for(
                browser,
                f"check {check!r} on lstm_candidate's Checks tab",
                lambda d, c=check: displayed_text(d, c),
            )
        assert_no_app_error(browser)
        browser.save_screenshot(str(tmp_path / "asset-checks.png"))


def test_automation_page_lists_the_sensors_and_schedules(
    browser: WebDriver, dagster_ui: DagsterUI, tmp_path: Path
) -> None:
    with screenshot_on_failure(browser, tmp_path, "automation"):
        browser.get(f"{dagster_ui.base_url}/automation")
        for name in (
            "drift_retrain",
            "alert_on_run_failure",
            "live_data_refresh",
            "free_stuck_pool_slots",
            "nightly_monitoring",
            "nightly_retrain",
        ):
            wait_for(
                browser,
                f"{name!r} on the Automation page",
                lambda d, n=name: displayed_text(d, n),
            )
        assert_no_app_error(browser)
        browser.save_screenshot(str(tmp_path / "automation.png"))


def test_football_data_odds_launchpad_materializes(
    browser: WebDriver, dagster_ui: DagsterUI, tmp_path: Path
) -> None:
    # Guards a bug users hit: the Launchpad opened with "Invalid scalar at path
    # root:ops:football_data_odds:config:default_kickoff_time. Value "900" of type
    # "<class 'int'>" is not valid for expected type "String"." and Materialize disabled
    # (the scaffolded `default_kickoff_time: 15:00` is read by YAML 1.1 as sexagesimal 900).
    with screenshot_on_failure(browser, tmp_path, "launchpad"):
        dialog = open_launchpad(browser, dagster_ui.base_url, "football_data_odds")
        assert_no_app_error(browser)
        errors, enabled = launchpad_state(browser, dialog)
        assert errors.lower() == "no errors", (
            f"the football_data_odds Launchpad opens with config errors:\n{errors}\n"
            f"scaffolded config:\n{editor_value(browser)}"
        )
        assert enabled, "the Launchpad's Materialize button is disabled"
        run_url = launch(browser, dialog)
        status = wait_for_run_end(browser)
        browser.save_screenshot(str(tmp_path / "launchpad-run.png"))
        assert status == "Success", f"football_data_odds run ended {status}: {run_url}"


def test_failed_run_shows_its_one_line_error(
    browser: WebDriver, dagster_ui: DagsterUI, tmp_path: Path
) -> None:
    # The simulator refuses a negative event count; the asset turns that into a dagster.Failure
    # whose description is one line.
    from odds_pipeline.ingestion.sources import simulator

    with pytest.raises(ValueError) as refused:
        simulator.config_from_mapping({"n_events": -1})
    reason = str(refused.value)
    assert "\n" not in reason

    with screenshot_on_failure(browser, tmp_path, "failed-run"):
        dialog = open_launchpad(browser, dagster_ui.base_url, "simulated_market")
        config = editor_value(browser)
        assert re.search(r"^\s+n_events: \d+$", config, re.M), config
        set_editor_value(browser, re.sub(r"^(\s+n_events:) \d+$", r"\1 -1", config, flags=re.M))
        errors, enabled = launchpad_state(browser, dialog)
        assert errors.lower() == "no errors", f"the Launchpad shows config errors:\n{errors}"
        assert enabled, "the Launchpad's Materialize button is disabled"
        run_url = launch(browser, dialog)
        status = wait_for_run_end(browser)
        assert status == "Failure", f"simulated_market with n_events: -1 ended {status}: {run_url}"
        line = wait_for(
            browser,
            f"the failure's one-line description ({reason!r}) on the run page",
            lambda d: next(
                (
                    el
                    for el in d.find_elements(
                        By.XPATH, f"//*[text()[contains(., {_xpath_literal(reason)})]]"
                    )
                    if el.is_displayed()
                ),
                None,
            ),
        )
        shown = next(part for part in line.text.splitlines() if reason in part)
        assert "invalid simulator config" in shown, shown
        browser.save_screenshot(str(tmp_path / "failed-run.png"))
