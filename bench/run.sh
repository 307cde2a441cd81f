#!/usr/bin/env bash
# Load benchmark of the DTM server (see bench/run.py for what it measures).
#
#   bash bench/run.sh [--stores sqlite,mysql,postgres,redis] [--servers 1,2] [--duration 10]
#       [--warmup 2] [--clients 16,64] [--modes empty,stub] [--protocols http,grpc]
#       [--json out.json]
#
# Installs what it needs when missing: wrk (Debian package, with apt-get), uv (with pip) and the
# server's locked dependencies (into .venv). Runs on loopback only; the MySQL, PostgreSQL and
# Redis stores use the services on their usual ports (scripts/ensure-services.sh starts them).
# Each run takes duration + warmup + about a second to start its servers on an empty store;
# there is one run per store x server count x mode x client count x protocol: 4 with the
# defaults (about 50 s), 32 for the full HTTP matrix (about 4 minutes with --duration 5
# --warmup 1). --protocols grpc submits over gRPC with bench/grpc_load.py instead of wrk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_apt_packages wrk
find_uv
# Same environment as scripts/serve.sh: the server extra, leaving any dev tools in place.
"${UV[@]}" sync --frozen --extra server --no-dev --inexact --quiet

# run.py starts the server, the stubs and the load generators, and stops them all when it exits.
exec "${UV[@]}" run --frozen --no-sync python bench/run.py "$@"
