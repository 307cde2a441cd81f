#!/usr/bin/env bash
# Start the DTM server: embedded SQLite store, HTTP API on port 36789 (/api/dtmsvr).
#
#   bash scripts/serve.sh [dtm serve options...]     e.g. --http-port 8080, -c conf.yml
#
# On a fresh machine it needs only python3: it installs uv with pip when uv is missing, then
# installs the locked server dependencies into .venv. When everything is installed already it
# costs well under a second before the server starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

find_uv
# --no-dev: serving needs no test tools. --inexact: keep whatever else is in .venv (the dev
# group of someone who also runs the tests), so serving and testing do not undo each other.
"${UV[@]}" sync --frozen --extra server --no-dev --inexact --quiet
# --no-sync: the environment was just synced; a plain `uv run` would also install the dev group.
exec "${UV[@]}" run --frozen --no-sync dtm serve "$@"
