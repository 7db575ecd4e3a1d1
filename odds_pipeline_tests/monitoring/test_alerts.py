"""On-call alerts: Slack webhook delivery against a real loopback server, retries, no secret leaks.

The webhook tests talk to a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0), so retries, timeouts
and urllib3's own DEBUG logging are the real thing, not mocks.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from odds_pipeline.monitoring.alerts import (
    SLACK_SECTION_LIMIT,
    Alert,
    AlertSink,
    LogSink,
    SendResult,
    WebhookSink,
    failure_alert,
    redact_url,
    scrub,
    scrub_common,
    sink_from_env,
    slack_payload,
    summarize_error,
)

TOKEN = "SECRETTOKEN"
SECRET_PATH = f"/services/T000/B000/{TOKEN}"
RUN_URL = "http://dagster.local:3000/runs/0f1e2d3c-aaaa-bbbb-cccc-123456789abc"

TRACEBACK = """\
Traceback (most recent call last):
  File "/app/odds_pipeline/ingestion/load.py", line 41, in load
    frame = read(path)
            ^^^^^^^^^^
  File "/app/odds_pipeline/ingestion/read.py", line 12, in read
    raise KeyError("price")
KeyError: 'price'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/app/odds_pipeline/ingestion/load.py", line 43, in load
    raise ValueError("snapshot 2024-05-01 has no price column") from exc
ValueError: snapshot 2024-05-01 has no price column
"""


# --------------------------------------------------------------------------- fake webhook


@dataclass
class FakeWebhook:
    """A scripted Slack: ``statuses`` are answered in order, then ``default_status``."""

    url: str
    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    delay_s: float = 0.0
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        hook = self.server.hook
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with hook.lock:
            hook.received.append(
                {"path": self.path, "headers": dict(self.headers), "body": body.decode()}
            )
            status = hook.statuses.pop(0) if hook.statuses else hook.default_status
        if hook.delay_s:
            hook.release.wait(hook.delay_s)  # set at teardown, so no thread outlives the test
        reply = b"ok" if status == 200 else b"no_service"
        try:
            self.send_response(status)
            for name, value in hook.headers.get(status, {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except OSError:  # the client timed out and hung up
            pass

    def log_message(self, format: str, *args: Any) -> None:  # keep stderr quiet
        pass


class _Server(ThreadingHTTPServer):
    hook: FakeWebhook

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[FakeWebhook]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hook = FakeWebhook(url=f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}")
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.hook
    finally:
        server.hook.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on: connection refused, immediately."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{SECRET_PATH}"


@pytest.fixture(autouse=True)
def no_webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)


def make_sink(url: str, **kwargs: Any) -> WebhookSink:
    options: dict[str, Any] = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01}
    options.update(kwargs)
    return WebhookSink(url, **options)


def a_failure() -> Alert:
    return failure_alert(
        "ingest_odds_job",
        "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
        "load_snapshots",
        TRACEBACK,
        file="odds_pipeline/ingestion/load.py",
        line="43",
        run_url=RUN_URL,
    )


def assert_no_leak(text: str) -> None:
    assert TOKEN not in text
    assert SECRET_PATH not in text
    assert "/services/T000" not in text


# --------------------------------------------------------------------------- delivery


def test_good_post_delivers_slack_json(webhook: FakeWebhook) -> None:
    result = make_sink(webhook.url).send(a_failure())

    assert result == SendResult(True, 1, result.detail)
    assert len(webhook.received) == 1
    request = webhook.received[0]
    assert request["path"] == SECRET_PATH
    assert request["headers"]["Content-Type"].startswith("application/json")
    payload = json.loads(request["body"])
    assert "odds_pipeline run failed: ingest_odds_job at load_snapshots" in payload["text"]
    assert "ValueError: snapshot 2024-05-01 has no price column" in payload["text"]
    assert RUN_URL in payload["text"]
    types = [block["type"] for block in payload["blocks"]]
    assert types[0] == "header" and "section" in types and types[-1] == "context"
    assert "ingest_odds_job" in payload["blocks"][0]["text"]["text"]
    context = json.dumps(payload["blocks"][-1])
    assert RUN_URL in context
    fields = [f["text"] for b in payload["blocks"] for f in b.get("fields", [])]
    assert "run_id: 0f1e2d3c-aaaa-bbbb-cccc-123456789abc" in fields
    assert_no_leak(result.detail)


def test_500_twice_then_200_takes_three_attempts(webhook: FakeWebhook) -> None:
    webhook.statuses = [500, 500]
    result = make_sink(webhook.url, retries=3).send(a_failure())

    assert result.delivered
    assert result.attempts == 3
    assert len(webhook.received) == 3
    assert webhook.payloads()[0] == webhook.payloads()[2]  # the same message each time


def test_always_500_gives_up_after_configured_attempts_and_warns_once(
    webhook: FakeWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.default_status = 500
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")

    result = make_sink(webhook.url, retries=2).send(a_failure())  # must not raise

    assert not result.delivered
    assert result.attempts == 3 == len(webhook.received)
    assert "HTTP 500" in result.detail
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert warnings[0].name == "odds_pipeline.alerts"
    assert "HTTP 500" in message and "3 attempt" in message
    assert "ingest_odds_job" in message  # which alert was lost
    assert "http://127.0.0.1:" in message  # which endpoint, redacted
    assert_no_leak(message)
    assert_no_leak(caplog.text)  # urllib3's DEBUG request lines included


def test_slow_server_times_out_and_is_not_delivered(webhook: FakeWebhook) -> None:
    webhook.delay_s = 5.0
    started = time.monotonic()
    result = make_sink(webhook.url, timeout_s=0.2, retries=1).send(a_failure())

    assert not result.delivered
    assert result.attempts == 2
    assert "timed out" in result.detail
    assert time.monotonic() - started < 4.0  # bounded by the timeout, not by the server
    assert_no_leak(result.detail)


def test_404_is_not_retried(webhook: FakeWebhook) -> None:
    webhook.default_status = 404
    result = make_sink(webhook.url, retries=3).send(a_failure())

    assert not result.delivered
    assert result.attempts == 1 == len(webhook.received)
    assert "HTTP 404" in result.detail and "no_service" in result.detail


def test_redirect_is_not_followed(webhook: FakeWebhook) -> None:
    webhook.default_status = 302
    webhook.headers = {302: {"Location": "http://127.0.0.1:9/elsewhere"}}
    result = make_sink(webhook.url).send(a_failure())

    assert not result.delivered
    assert result.attempts == 1 == len(webhook.received)


def test_429_honours_retry_after_and_backoff_doubles(webhook: FakeWebhook) -> None:
    waits: list[float] = []
    webhook.statuses = [429, 500, 500]
    webhook.headers = {429: {"Retry-After": "0.05"}}
    result = make_sink(webhook.url, retries=3, backoff_s=0.01, sleep=waits.append).send(a_failure())

    assert result.delivered and result.attempts == 4
    assert waits == pytest.approx([0.05, 0.02, 0.04])


def test_connection_refused_is_retried_then_reported(closed_port_url: str) -> None:
    result = make_sink(closed_port_url, retries=1).send(a_failure())

    assert not result.delivered
    assert result.attempts == 2
    assert "connection error" in result.detail
    assert_no_leak(result.detail)  # requests' message quotes the URL path


@pytest.mark.parametrize("scenario", ["ok", "error_500", "timeout", "refused"])
def test_webhook_url_never_appears_in_logs_repr_or_detail(
    scenario: str,
    webhook: FakeWebhook,
    closed_port_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    url = closed_port_url if scenario == "refused" else webhook.url
    if scenario == "error_500":
        webhook.default_status = 500
    if scenario == "timeout":
        webhook.delay_s = 5.0
    sink = make_sink(url, timeout_s=0.3, retries=1)

    result = sink.send(a_failure())

    assert result.delivered == (scenario == "ok")
    if scenario != "refused":  # urllib3 logged the request line, so this test can fail
        assert any(r.name.startswith("urllib3") for r in caplog.records)
    assert_no_leak(caplog.text)
    for record in caplog.records:
        assert_no_leak(record.getMessage())
    assert_no_leak(repr(sink))
    assert_no_leak(str(sink))
    assert_no_leak(result.detail)
    assert repr(sink).startswith("WebhookSink(url='http://127.0.0.1:")


def test_invalid_webhook_url_error_does_not_quote_it() -> None:
    with pytest.raises(ValueError) as excinfo:
        WebhookSink(f"ftp://example.com{SECRET_PATH}")
    assert_no_leak(str(excinfo.value))
    assert "ftp://example.com/…" in str(excinfo.value)


def test_redact_url_keeps_scheme_and_host_only() -> None:
    url = f"https://user:pw@hooks.slack.com{SECRET_PATH}?token=abc"
    assert redact_url(url) == "https://hooks.slack.com/…"
    assert redact_url("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080/…"


# --------------------------------------------------------------------------- scrubbing


def test_scrub_masks_each_non_empty_secret() -> None:
    assert scrub("key abc123 and abc123", ["abc123", ""]) == "key *** and ***"
    assert scrub("nothing here", []) == "nothing here"
    assert scrub("url-encoded a%2Fb", ["a/b"]) == "url-encoded ***"


def test_scrub_common_masks_query_params_and_bearer_tokens() -> None:
    text = (
        "GET https://api.the-odds-api.com/v4/sports?apiKey=k123&regions=eu "
        "api_key=k456 token=t789 Authorization: Bearer eyJhbGciOi.payload.sig"
    )
    cleaned = scrub_common(text)
    for secret in ("k123", "k456", "t789", "eyJhbGciOi"):
        assert secret not in cleaned
    assert "apiKey=***&regions=eu" in cleaned
    assert "Bearer ***" in cleaned
    assert scrub_common("the bearer of bad news") == "the bearer of bad news"


def test_alert_is_scrubbed_of_odds_api_key_from_env(
    webhook: FakeWebhook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ODDS_API_KEY", "live-key-5f3a9c")
    alert = failure_alert(
        "ingest_odds_job",
        "run-1",
        "fetch",
        "HTTPError: 401 for url https://api.the-odds-api.com/v4/sports?apiKey=live-key-5f3a9c",
    )
    alert = Alert(
        title=alert.title,
        text=alert.text + "\nkey was live-key-5f3a9c",
        severity="error",
        fields={"key": "live-key-5f3a9c"},
    )

    assert make_sink(webhook.url).send(alert).delivered
    caplog.set_level(logging.INFO)
    assert LogSink().send(alert).delivered

    assert "live-key-5f3a9c" not in webhook.received[0]["body"]
    assert "***" in webhook.received[0]["body"]
    assert "live-key-5f3a9c" not in caplog.text
    assert "apiKey=***" in caplog.text


def test_explicit_secrets_and_webhook_env_are_scrubbed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"https://hooks.slack.com{SECRET_PATH}")
    caplog.set_level(logging.INFO)
    alert = Alert(
        "db password hunter2 leaked",
        f"posting to https://hooks.slack.com{SECRET_PATH} failed; token {TOKEN}",
        "warning",
    )
    assert LogSink(secrets=["hunter2"]).send(alert).delivered
    assert "hunter2" not in caplog.text
    assert_no_leak(caplog.text)


# --------------------------------------------------------------------------- log sink


def test_log_sink_writes_one_record_at_warning_for_warning_and_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="odds_pipeline.alerts")
    sink = LogSink()
    assert isinstance(sink, AlertSink)

    for severity, level in (("error", logging.WARNING), ("warning", logging.WARNING)):
        caplog.clear()
        result = sink.send(Alert("title", "line 1\nline 2", severity, {"job": "j"}, RUN_URL))
        assert result.delivered and result.attempts == 1
        assert [r.levelno for r in caplog.records] == [level]
        message = caplog.records[0].getMessage()
        assert "title" in message and "line 2" in message and RUN_URL in message
        assert "job=j" in message
    caplog.clear()
    sink.send(Alert("fyi", "", "info"))
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_alert_rejects_unknown_severity_and_flattens_title() -> None:
    with pytest.raises(ValueError):
        Alert("t", "x", "critical")  # type: ignore[arg-type]
    assert Alert("two\nlines", "x", "info").title == "two lines"


# --------------------------------------------------------------------------- failure alerts


def test_failure_alert_strips_traceback_to_final_exception_and_keeps_location() -> None:
    alert = a_failure()

    assert alert.title == "odds_pipeline run failed: ingest_odds_job at load_snapshots"
    assert alert.severity == "error"
    assert alert.text.splitlines() == [
        "ValueError: snapshot 2024-05-01 has no price column",
        "Location: odds_pipeline/ingestion/load.py:43",
    ]
    assert "Traceback" not in alert.text and "KeyError" not in alert.text
    assert alert.link == RUN_URL
    assert alert.fields == {
        "job": "ingest_odds_job",
        "step": "load_snapshots",
        "run_id": "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
    }
    assert alert.dedupe_key == "run_failure:ingest_odds_job:load_snapshots:ValueError"


def test_failure_alert_without_step_or_location() -> None:
    alert = failure_alert("train_job", "r1", None, "RuntimeError: CUDA out of memory")
    assert alert.title == "odds_pipeline run failed: train_job"
    assert alert.text == "RuntimeError: CUDA out of memory"
    assert "step" not in alert.fields


def test_summarize_error_drops_frames_of_serialized_errors() -> None:
    dagster_style = (
        'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "fit":\n'
        "\nStack Trace:\n"
        '  File "/venv/dagster/_core/execution/plan/utils.py", line 54, in op_execution_error_boundary\n'
        "    yield\n"
        "\nThe above exception was caused by the following exception:\n"
        "ValueError: no rows\n"
        "\nStack Trace:\n"
        '  File "/app/odds_pipeline/training/fit.py", line 10, in fit\n'
        "    raise ValueError('no rows')\n"
    )
    lines = summarize_error(dagster_style).splitlines()
    assert lines[0].startswith("dagster._core.errors.DagsterExecutionStepExecutionError")
    assert "ValueError: no rows" in lines
    assert not any("File " in ln or "Stack Trace" in ln for ln in lines)


def test_failure_alert_is_length_limited_but_keeps_location() -> None:
    huge = 'Traceback (most recent call last):\n  File "x.py", line 1\nMemoryError: ' + (
        "x" * 10_000
    )
    alert = failure_alert("j", "r", "s", huge, file="x.py", line="1")
    assert len(alert.text) <= SLACK_SECTION_LIMIT
    assert alert.text.endswith("Location: x.py:1")
    many_lines = "\n".join(f"line {i}" for i in range(100))
    assert len(failure_alert("j", "r", "s", many_lines).text.splitlines()) <= 9


def test_slack_payload_respects_block_limits() -> None:
    fields = {f"k{i}": "v" for i in range(13)}
    payload = slack_payload(Alert("T" * 500, "a < b & c" + "z" * 5000, "warning", fields))
    blocks = payload["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections[0]["text"]["text"]) <= SLACK_SECTION_LIMIT
    assert [len(b["fields"]) for b in sections[1:]] == [10, 3]
    assert "a &lt; b &amp; c" in payload["text"]
    assert len(payload["text"]) <= 4000


# --------------------------------------------------------------------------- sink_from_env


def test_sink_from_env_picks_webhook_only_when_url_set() -> None:
    sink = sink_from_env({"ALERT_WEBHOOK_URL": f"https://hooks.slack.com{SECRET_PATH}"})
    assert isinstance(sink, WebhookSink)
    assert_no_leak(repr(sink))
    assert isinstance(sink_from_env({}), LogSink)
    assert isinstance(sink_from_env({"ALERT_WEBHOOK_URL": "  "}), LogSink)
    assert isinstance(sink_from_env(), LogSink)  # the fixture cleared the real environment
