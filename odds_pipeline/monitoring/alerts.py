"""On-call alerts: what a failed run says, and where it goes (the log, or a Slack-style webhook).

Pure domain code (no Dagster): the Dagster layer turns a run-failure event into an ``Alert`` with
``failure_alert`` and hands it to the sink from ``sink_from_env``. Two rules shape everything here:

* alerting must never become a second failure, so ``AlertSink.send`` never raises: it reports
  what happened in a ``SendResult``;
* alerting must never leak a secret into a chat channel or a log, so every alert is scrubbed
  before it leaves (explicit secrets, ``ODDS_API_KEY``, ``ALERT_WEBHOOK_URL``, ``apiKey=``-style
  parameters, ``Bearer`` tokens), and the webhook URL itself, a credential for Slack, is only
  ever shown as ``scheme://host/…``: not in logs (urllib3's included), exception messages,
  ``repr()`` or ``SendResult.detail``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import requests

__all__ = [
    "ALERT_LOGGER",
    "SECRET_ENV_VARS",
    "SEVERITIES",
    "WEBHOOK_ENV_VAR",
    "Alert",
    "AlertSink",
    "LogSink",
    "SendResult",
    "Severity",
    "WebhookSink",
    "env_secrets",
    "failure_alert",
    "redact_url",
    "render_text",
    "scrub",
    "scrub_alert",
    "scrub_common",
    "sink_from_env",
    "slack_payload",
    "summarize_error",
]

Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error")

ALERT_LOGGER = "odds_pipeline.alerts"
WEBHOOK_ENV_VAR = "ALERT_WEBHOOK_URL"
SECRET_ENV_VARS: tuple[str, ...] = ("ODDS_API_KEY", WEBHOOK_ENV_VAR)
"""Environment variables whose values are masked in every alert, whatever the sink was given."""

MASK = "***"

SLACK_SECTION_LIMIT = 3000
"""Slack rejects a section text longer than this, so alert texts are cut to it."""
SLACK_HEADER_LIMIT = 150
SLACK_FIELD_LIMIT = 2000
SLACK_FIELDS_PER_SECTION = 10
FALLBACK_TEXT_LIMIT = 4000
"""Top-level ``text`` (notifications, clients without blocks): Slack advises at most 4,000."""

MAX_ERROR_LINES = 8
"""Lines of an error message kept in a failure alert: enough for the message, not a log dump."""

_ICONS = {"info": ":information_source:", "warning": ":warning:", "error": ":rotating_light:"}


# --------------------------------------------------------------------------- alert and result


@dataclass(frozen=True)
class Alert:
    """One message for the on-call engineer; sinks decide how it is rendered.

    ``title`` is forced onto one line (it becomes a Slack header and a log line's head);
    ``dedupe_key`` is carried for callers that suppress repeats, sinks do not deduplicate.
    """

    title: str
    text: str
    severity: Severity
    fields: dict[str, str] = field(default_factory=dict)
    link: str | None = None
    dedupe_key: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        object.__setattr__(self, "title", " ".join(str(self.title).split()))


@dataclass(frozen=True)
class SendResult:
    """What a sink did with an alert; ``detail`` is safe to log (no secrets, no webhook URL)."""

    delivered: bool
    attempts: int
    detail: str


@runtime_checkable
class AlertSink(Protocol):
    """Where alerts go. ``send`` must not raise: a broken alert channel must not mask the
    failure that is being reported."""

    def send(self, alert: Alert) -> SendResult: ...


# --------------------------------------------------------------------------- scrubbing

_PARAM_RE = re.compile(
    r"(?i)\b((?:[a-z0-9]+[_-])?(?:api[_-]?key|token|secret|password)=)[^&\s'\"<>]+"
)
_BEARER_RE = re.compile(r"\b([Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every non-empty secret (also URL-encoded or whitespace-stripped) with ``***``.

    Longest first, so a full URL is masked as a whole before its path would be.
    """
    variants: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for candidate in (secret, secret.strip()):
            if candidate:
                variants.add(candidate)
                variants.add(quote(candidate, safe=""))
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    return text


def scrub_common(text: str, secrets: Iterable[str] = ()) -> str:
    """``scrub`` plus the secrets we can recognise without knowing them: ``apiKey=``,
    ``api_key=``, ``token=`` (and similar) parameters and ``Bearer`` tokens."""
    text = scrub(text, secrets)
    text = _PARAM_RE.sub(lambda m: m.group(1) + MASK, text)
    return _BEARER_RE.sub(lambda m: m.group(1) + MASK, text)


def _url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that are credentials: the URL, its path/query and token."""
    url = url.strip()
    out = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    tail = url.split(parts.netloc, 1)[1] if parts.netloc else ""
    for piece in (tail, parts.path, parts.query, parts.password or ""):
        if len(piece) > 1:
            out.append(piece)
    segments = [s for s in parts.path.split("/") if s]
    if segments and len(segments[-1]) >= 8:  # Slack/Discord/Teams put the token last
        out.append(segments[-1])
    return out


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Secret values found in the environment (``SECRET_ENV_VARS``), webhook URL parts included."""
    env = os.environ if env is None else env
    out: list[str] = []
    for name in SECRET_ENV_VARS:
        value = (env.get(name) or "").strip()
        if value:
            out.extend(_url_secrets(value) if name == WEBHOOK_ENV_VAR else [value])
    return out


def scrub_alert(
    alert: Alert, secrets: Iterable[str] = (), env: Mapping[str, str] | None = None
) -> Alert:
    """The alert with ``scrub_common`` applied to every text it carries (env secrets included)."""
    all_secrets = [*secrets, *env_secrets(env)]

    def clean(text: str) -> str:
        return scrub_common(str(text), all_secrets)

    return replace(
        alert,
        title=clean(alert.title),
        text=clean(alert.text),
        fields={clean(k): clean(v) for k, v in alert.fields.items()},
        link=None if alert.link is None else clean(alert.link),
        dedupe_key=None if alert.dedupe_key is None else clean(alert.dedupe_key),
    )


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: enough to tell which endpoint, nothing of its secret part."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not host:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


class _LibraryLogScrubber(logging.Filter):
    """Scrubs records of the HTTP libraries before any handler sees them.

    urllib3 logs every request line at DEBUG (``"POST /services/T…/B…/<token> HTTP/1.1" 200``)
    and URLs in its retry messages, so with DEBUG logging on, a webhook token would land in the
    logs. A logger-level filter runs before propagation, so every handler gets the clean text.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if s}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the library's problem, not ours
            return True
        cleaned = scrub(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), secrets)
        return True


_LIBRARY_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "urllib3.connection",
    "requests",
)
_LIBRARY_SCRUBBER = _LibraryLogScrubber()


def _guard_library_logs(secrets: Iterable[str]) -> None:
    _LIBRARY_SCRUBBER.add(secrets)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).addFilter(_LIBRARY_SCRUBBER)  # no-op when already attached


# --------------------------------------------------------------------------- rendering


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut_mrkdwn(text: str, limit: int) -> str:
    """Escape for Slack mrkdwn, then cut without leaving half an ``&amp;`` behind."""
    escaped = _mrkdwn_escape(text)
    if len(escaped) <= limit:
        return escaped
    head = re.sub(r"&[a-z]{0,3}$", "", escaped[: max(limit - 1, 0)])
    return head.rstrip() + "…"


def render_text(alert: Alert) -> str:
    """Plain-text rendering (log records): title, text, fields, link, one per line."""
    lines = [f"[{alert.severity.upper()}] {alert.title}"]
    if alert.text.strip():
        lines.append(alert.text.strip())
    if alert.fields:
        lines.append(", ".join(f"{k}={v}" for k, v in alert.fields.items()))
    if alert.link:
        lines.append(alert.link)
    return "\n".join(lines)


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON: fallback ``text`` plus header/section/context blocks.

    Texts are ``plain_text`` (an error message full of ``*`` and ``_`` must not turn into
    formatting); the run link is a context ``mrkdwn`` link rather than a button, because a URL
    button posted through a webhook shows a warning unless the app handles interactions.
    """
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{_ICONS[alert.severity]} {alert.title}", SLACK_HEADER_LIMIT),
                "emoji": True,
            },
        }
    ]
    if alert.text.strip():
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "plain_text",
                    "text": _cut(alert.text.strip(), SLACK_SECTION_LIMIT),
                    "emoji": False,
                },
            }
        )
    items = [f"{k}: {v}" for k, v in alert.fields.items()]
    for start in range(0, len(items), SLACK_FIELDS_PER_SECTION):
        chunk = items[start : start + SLACK_FIELDS_PER_SECTION]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "plain_text", "text": _cut(item, SLACK_FIELD_LIMIT), "emoji": False}
                    for item in chunk
                ],
            }
        )
    context: list[dict[str, Any]] = [{"type": "mrkdwn", "text": f"*{alert.severity}*"}]
    if alert.link:
        url = _mrkdwn_escape(alert.link.replace("|", "%7C"))
        context.append({"type": "mrkdwn", "text": f"<{url}|Open the run in Dagster>"})
    blocks.append({"type": "context", "elements": context})

    link = f"\n{_mrkdwn_escape(alert.link)}" if alert.link else ""
    head = _mrkdwn_escape(f"{alert.title}\n")
    body = _cut_mrkdwn(alert.text.strip(), max(FALLBACK_TEXT_LIMIT - len(head) - len(link), 0))
    return {"text": f"{head}{body}{link}", "blocks": blocks}


# --------------------------------------------------------------------------- sinks


class LogSink:
    """Writes each alert as one log record: the default when no webhook is configured.

    ``warning`` and ``error`` alerts log at WARNING (ERROR is left to the failure itself, which
    the orchestrator already logs), ``info`` at INFO.
    """

    def __init__(
        self,
        logger_name: str = ALERT_LOGGER,
        *,
        secrets: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.logger = logging.getLogger(logger_name)
        self._secrets = tuple(s for s in secrets if s)
        self._env = env

    def __repr__(self) -> str:
        return f"LogSink(logger_name={self.logger.name!r})"

    def send(self, alert: Alert) -> SendResult:
        try:
            clean = scrub_alert(alert, self._secrets, self._env)
            level = logging.INFO if clean.severity == "info" else logging.WARNING
            self.logger.log(
                level,
                "%s",
                render_text(clean),
                extra={
                    "alert_severity": clean.severity,
                    "alert_fields": dict(clean.fields),
                    "alert_dedupe_key": clean.dedupe_key,
                },
            )
        except Exception as exc:  # never raise from an alert path
            return SendResult(False, 1, f"log sink failed: {type(exc).__name__}")
        return SendResult(True, 1, f"logged to {self.logger.name}")


def _one_line(text: str, limit: int = 300) -> str:
    return _cut(" ".join(text.split()), limit)


class WebhookSink:
    """POSTs a Slack-compatible JSON alert to a webhook URL, with bounded retries.

    Attempts: one, plus up to ``retries`` more (so ``retries=3`` means at most 4 POSTs).
    Retried: timeouts, connection errors, HTTP 5xx and 429 (honouring a numeric
    ``Retry-After`` up to ``max_backoff_s``); the wait before retry *n* (1-based) is
    ``backoff_s * 2**(n-1)``, capped at ``max_backoff_s``. Not retried: other 4xx (Slack's
    ``invalid_payload``/``no_service``/``channel_is_archived`` will not heal), redirects (a
    webhook that redirects is misconfigured, and following it would re-send the alert
    elsewhere) and invalid requests. A timed-out POST may still have been delivered, so a
    retry can duplicate a message: at-least-once is the right trade for on-call alerts.

    ``send`` never raises. After the last failure it logs one WARNING line on
    ``odds_pipeline.alerts`` (with the alert title, never the URL) and returns
    ``delivered=False`` with the reason.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        session: requests.Session | None = None,
        secrets: Iterable[str] = (),
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        env: Mapping[str, str] | None = None,
        logger_name: str = ALERT_LOGGER,
    ) -> None:
        url = (url or "").strip()
        try:
            parts = urlsplit(url)
            has_host = bool(parts.hostname)
        except ValueError:
            parts, has_host = None, False
        if parts is None or parts.scheme not in ("http", "https") or not has_host:
            raise ValueError(f"webhook URL must be http(s)://host/...; got {redact_url(url)}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("backoff_s and max_backoff_s must be >= 0")
        self._url = url
        self.redacted_url = redact_url(url)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._url_secrets = tuple(_url_secrets(url))
        self._secrets = (*self._url_secrets, *(s for s in secrets if s))
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep
        self._env = env
        self.logger = logging.getLogger(logger_name)
        _guard_library_logs(self._url_secrets)

    def __repr__(self) -> str:
        return (
            f"WebhookSink(url={self.redacted_url!r}, timeout_s={self.timeout_s:g}, "
            f"retries={self.retries}, backoff_s={self.backoff_s:g})"
        )

    def _scrub(self, text: str) -> str:
        return scrub_common(text, [*self._secrets, *env_secrets(self._env)])

    def _delay(self, retry: int, retry_after: float | None) -> float:
        delay = self.backoff_s * 2 ** (retry - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff_s)

    def _attempt(self, payload: dict[str, Any]) -> tuple[bool, bool, str, float | None]:
        """One POST: (delivered, retryable, what happened, Retry-After seconds)."""
        try:
            response = self._session.post(
                self._url, json=payload, timeout=self.timeout_s, allow_redirects=False
            )
        except requests.Timeout as exc:
            return False, True, f"timed out after {self.timeout_s:g}s ({type(exc).__name__})", None
        except requests.ConnectionError as exc:
            return False, True, f"connection error ({type(exc).__name__}: {exc})", None
        except requests.RequestException as exc:
            return False, False, f"request error ({type(exc).__name__}: {exc})", None
        status = int(response.status_code)
        body = _one_line(response.text or "", 200)
        if 200 <= status < 300:
            return True, False, f"HTTP {status}", None
        retry_after: float | None = None
        if status == 429:
            try:
                retry_after = max(0.0, float(response.headers.get("Retry-After", "")))
            except ValueError:
                retry_after = None
        retryable = status == 429 or status >= 500
        return False, retryable, f"HTTP {status}: {body}" if body else f"HTTP {status}", retry_after

    def send(self, alert: Alert) -> SendResult:
        attempts = 0
        problem = "no attempt"
        title = _one_line(alert.title, 150)
        link = ""
        try:
            clean = scrub_alert(alert, self._secrets, self._env)
            title, link = clean.title, clean.link or ""
            payload = slack_payload(clean)
            while True:
                attempts += 1
                delivered, retryable, problem, retry_after = self._attempt(payload)
                if delivered:
                    detail = f"delivered to {self.redacted_url} ({problem})"
                    return SendResult(True, attempts, self._scrub(detail))
                if not retryable or attempts > self.retries:
                    break
                delay = self._delay(attempts, retry_after)
                self.logger.debug(
                    "Alert webhook attempt %d/%d failed (%s); retrying in %.2fs",
                    attempts,
                    self.retries + 1,
                    self._scrub(_one_line(problem)),
                    delay,
                )
                self._sleep(delay)
        except Exception as exc:  # never raise from an alert path
            problem = f"unexpected {type(exc).__name__}: {exc}"
        detail = self._scrub(
            f"not delivered to {self.redacted_url} after {attempts} attempt(s): "
            f"{_one_line(problem)}"
        )
        self.logger.warning(
            "%s",
            self._scrub(
                f"Alert {_one_line(title, 150)!r} {detail}" + (f" run: {link}" if link else "")
            ),
        )
        return SendResult(False, attempts, detail)


def sink_from_env(env: Mapping[str, str] | None = None) -> AlertSink:
    """``WebhookSink`` when ``ALERT_WEBHOOK_URL`` is set (and not blank), ``LogSink`` otherwise.

    A malformed URL raises ``ValueError`` (URL redacted) at configuration time: silently
    falling back to the log would lose every page until someone noticed.
    """
    env = os.environ if env is None else env
    url = (env.get(WEBHOOK_ENV_VAR) or "").strip()
    if url:
        return WebhookSink(url, env=env)
    return LogSink(env=env)


# --------------------------------------------------------------------------- failure alerts

_TRACEBACK_HEADER = "Traceback (most recent call last)"
_FRAME_RE = re.compile(r'^(\s+)File "')
_EXCEPTION_NAME_RE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _drop_frames(lines: list[str]) -> list[str]:
    """Drop ``  File "…", line N`` stack frames and their code/caret lines, keep the rest."""
    out: list[str] = []
    frame_indent: int | None = None
    for line in lines:
        match = _FRAME_RE.match(line)
        if match:
            frame_indent = len(match.group(1))
            continue
        if frame_indent is not None and line.strip() and _indent(line) > frame_indent:
            continue
        frame_indent = None
        out.append(line)
    return out


def summarize_error(
    error_text: str, *, max_lines: int = MAX_ERROR_LINES, max_chars: int = SLACK_SECTION_LIMIT
) -> str:
    """The error's own message, as an on-call engineer wants to read it first.

    A Python traceback is reduced to its final exception line(s) (the exception that ended the
    run; chained causes above it are dropped); other text (e.g. Dagster's serialized errors)
    loses its stack frames. Blank lines go, then at most ``max_lines`` lines and ``max_chars``
    characters are kept.
    """
    text = str(error_text).replace("\r\n", "\n").replace("\r", "\n")
    if _TRACEBACK_HEADER in text:
        lines = text.rsplit(_TRACEBACK_HEADER, 1)[1].split("\n")[1:]
        start = next((i for i, ln in enumerate(lines) if ln.strip() and not ln[0].isspace()), None)
        # No unindented exception line (e.g. an exception group): keep the last line.
        last = [ln.strip() for ln in lines if ln.strip()][-1:]
        lines = last if start is None else lines[start:]
    else:
        lines = _drop_frames(text.split("\n"))
    kept = [ln.rstrip() for ln in lines if ln.strip() and ln.strip() != "Stack Trace:"]
    if len(kept) > max_lines:
        kept = [*kept[:max_lines], f"… ({len(kept) - max_lines} more lines)"]
    return _cut("\n".join(kept), max_chars)


def failure_alert(
    job: str,
    run_id: str,
    step: str | None,
    error_text: str,
    *,
    file: str | None = None,
    line: str | None = None,
    run_url: str | None = None,
) -> Alert:
    """The alert for a failed run: where it failed, the error's own words, a link to the run.

    The text fits one Slack section (3,000 characters); the location line always survives the
    cut. ``dedupe_key`` is job + step + exception name, so a failure repeating on every
    schedule tick can be recognised as the same one.
    """
    title = f"odds_pipeline run failed: {job}" + (f" at {step}" if step else "")
    location: list[str] = []
    if file and line:
        location.append(f"Location: {file}:{line}")
    elif file:
        location.append(f"Location: {file}")
    elif line:
        location.append(f"Line: {line}")
    budget = SLACK_SECTION_LIMIT - sum(len(x) + 1 for x in location)
    summary = summarize_error(error_text, max_chars=max(budget, 1)) or "(no error message)"
    text = _cut("\n".join([summary, *location]), SLACK_SECTION_LIMIT)

    fields = {"job": job}
    if step:
        fields["step"] = step
    fields["run_id"] = run_id
    name = _EXCEPTION_NAME_RE.match(summary)
    kind = name.group(1) if name else "error"
    return Alert(
        title=title,
        text=text,
        severity="error",
        fields=fields,
        link=run_url,
        dedupe_key=f"run_failure:{job}:{step or '-'}:{kind}",
    )


def arbitrage_alert(window: Mapping[str, Any], legs: list[Mapping[str, Any]]) -> Alert:
    """A new actionable arbitrage window: what to back where, for how much, and what it pays."""
    line = window.get("line")
    market = f"{window['market']}" + ("" if line is None or line != line else f" {line:g}")
    rows = [
        f"{leg.get('outcome')} @ {leg.get('bookmaker')}: {float(leg.get('price', 0)):.3f}, "
        f"stake {float(leg.get('stake', 0)):.2f}"
        for leg in legs
    ]
    margin = float(window.get("best_margin") or 0.0)
    profit = float(window.get("guaranteed_profit") or 0.0)
    return Alert(
        title=f"Arbitrage {margin:.2%} on {window['event_id']} ({market})",
        text="\n".join(
            [
                *rows,
                f"guaranteed profit after rounding {profit:.2f}; opened {window.get('opened_at')}",
            ]
        ),
        severity="info",
        fields={"event": str(window["event_id"]), "market": market, "margin": f"{margin:.4f}"},
        dedupe_key=f"arb:{window['event_id']}:{market}:{window.get('opened_at')}",
    )
