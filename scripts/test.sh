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

export UV_PYTHON_DOWNLOADS=never

# Debian packages the tests need. Add a package here when a test starts needing one
# (browser tests will need: chromium chromium-driver).
APT_PACKAGES=()

ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    local sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    echo "test.sh: installing Debian packages: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
}

# Sets UV to the command that runs uv, installing uv with pip when there is none.
# `python3 -m uv` works right after a pip install, before a shell or pyenv shim knows about it.
find_uv() {
    if uv --version >/dev/null 2>&1; then
        UV=(uv)
    elif python3 -m uv --version >/dev/null 2>&1; then
        UV=(python3 -m uv)
    else
        echo "test.sh: uv not found; installing it with pip" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
        UV=(python3 -m uv)
    fi
}

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
