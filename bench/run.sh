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

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_apt_packages wrk
find_uv
# Same environment as scripts/serve.sh: the server extra, leaving any dev tools in place.
"${UV[@]}" sync --frozen --extra server --no-dev --inexact --quiet

# run.py starts the server, the stub and wrk, and stops them all when it exits.
exec "${UV[@]}" run --frozen --no-sync python bench/run.py "$@"
