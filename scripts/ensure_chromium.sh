#!/usr/bin/env bash
# Make sure Debian's Chromium and its chromedriver are present, for the real-browser UI test
# (odds_pipeline_tests/test_ui_browser.py: selenium drives headless Chromium against the running
# Dagster UI). Idempotent and quiet on success: prints only the two paths found.
# Never fails the build: when the packages cannot be installed (not root, no apt-get, no
# registry) it prints one line saying why and exits 0; that test then skips with a reason.
set -u

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

have_both() {
    [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]
}

if have_both; then
    echo "$CHROMIUM $CHROMEDRIVER"
    exit 0
fi

if [ "${EUID:-$(id -u)}" -ne 0 ]; then
    echo "ensure_chromium: chromium/chromedriver not installed and not root: skipping install (the browser UI test will skip)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium/chromedriver not installed and no apt-get here: skipping install (the browser UI test will skip)" >&2
    exit 0
fi

log=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
    echo "ensure_chromium: apt-get install chromium chromium-driver failed (the browser UI test will skip); last lines:" >&2
    tail -n 5 "$log" >&2
    rm -f "$log"
    exit 0
fi
rm -f "$log"

if have_both; then
    echo "$CHROMIUM $CHROMEDRIVER"
else
    echo "ensure_chromium: chromium installed but $CHROMIUM or $CHROMEDRIVER is missing (the browser UI test will skip)" >&2
fi
exit 0
