#!/usr/bin/env bash
# Load benchmark of the DTM server (see bench/run.py for what it measures).
#
#   bash bench/run.sh [--duration 10] [--clients 16,64] [--modes empty,stub] [--json out.json]
#
# Installs what it needs when missing: wrk (Debian package, with apt-get), uv (with pip) and the
# server's locked dependencies (into .venv). Runs on loopback only; takes about
# (duration + warmup) x modes x client counts, 48 s with the defaults, plus start-up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export UV_PYTHON_DOWNLOADS=never

if ! command -v wrk >/dev/null; then
    sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    echo "bench: installing wrk (Debian package)" >&2
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends wrk >&2
fi

if uv --version >/dev/null 2>&1; then
    UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
    UV=(python3 -m uv)
else
    echo "bench: uv not found; installing it with pip" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
    UV=(python3 -m uv)
fi
# Same environment as scripts/serve.sh: the server extra, leaving any dev tools in place.
"${UV[@]}" sync --frozen --extra server --no-dev --inexact --quiet

# run.py starts the server, the stub and wrk, and stops them all when it exits.
exec "${UV[@]}" run --frozen --no-sync python bench/run.py "$@"
