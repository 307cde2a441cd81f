#!/usr/bin/env bash
# Run every check CI runs, in order, stopping at the first failure:
#   ruff check, ruff format --check, mypy, pytest
#
#   bash scripts/test.sh [pytest options...]     e.g. -x -k saga tests/unit
#
# Installs what the checks need when it is missing: Debian packages (with apt-get), uv (with
# pip), and the locked dependencies with every extra and the dev group (into .venv).
# The tests expect PostgreSQL, MariaDB and Redis on 127.0.0.1; scripts/ensure-services.sh
# starts them when they are down.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Debian packages the tests need. Add a package here when a test starts needing one
# (browser tests will need: chromium chromium-driver).
APT_PACKAGES=()

step() {
    echo "==> $*" >&2
    "${UV[@]}" run --frozen --no-sync "$@"
}

ensure_apt_packages "${APT_PACKAGES[@]}"
find_uv
"${UV[@]}" sync --frozen --all-extras --quiet

step ruff check
step ruff format --check
step mypy
# pytest's exit code 5 ("no tests collected") is a failure too: a filter that selects nothing
# must not pass silently. set -e stops here on any non-zero code.
rc=0
step pytest "$@" || rc=$?
if ((rc == 5)); then
    echo "test.sh: pytest collected no tests" >&2
fi
exit "$rc"
