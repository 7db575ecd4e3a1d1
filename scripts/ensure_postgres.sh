#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries (initdb, pg_ctl) are present, for the test that
# runs the Dagster instance on a throwaway PostgreSQL server (odds_pipeline_tests/
# test_postgres_instance.py). Idempotent and quiet on success: prints only the bin dir found.
# Never fails the build: when the package cannot be installed (not root, no apt-get, no
# registry) it prints one line saying why and exits 0; that test then skips with a reason.
set -u

find_bin_dir() {
    local d
    # Newest major version first (e.g. /usr/lib/postgresql/15/bin).
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

if bin_dir=$(find_bin_dir); then
    echo "$bin_dir"
    exit 0
fi

if [ "${EUID:-$(id -u)}" -ne 0 ]; then
    echo "ensure_postgres: PostgreSQL not installed and not root: skipping install (the Postgres instance test will skip)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_postgres: PostgreSQL not installed and no apt-get here: skipping install (the Postgres instance test will skip)" >&2
    exit 0
fi

log=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >"$log" 2>&1; then
    echo "ensure_postgres: apt-get install postgresql failed (the Postgres instance test will skip); last lines:" >&2
    tail -n 5 "$log" >&2
    rm -f "$log"
    exit 0
fi
rm -f "$log"

if bin_dir=$(find_bin_dir); then
    echo "$bin_dir"
else
    echo "ensure_postgres: postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql/*/bin (the Postgres instance test will skip)" >&2
fi
exit 0
