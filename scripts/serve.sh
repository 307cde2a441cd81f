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

# There is no Python download to fall back on here: use the machine's python3.
export UV_PYTHON_DOWNLOADS=never

# Sets UV to the command that runs uv, installing uv with pip when there is none.
# `python3 -m uv` works right after a pip install, before a shell or pyenv shim knows about it.
find_uv() {
    if uv --version >/dev/null 2>&1; then
        UV=(uv)
    elif python3 -m uv --version >/dev/null 2>&1; then
        UV=(python3 -m uv)
    else
        echo "serve.sh: uv not found; installing it with pip" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
        UV=(python3 -m uv)
    fi
}

find_uv
# --no-dev: serving needs no test tools. --inexact: keep whatever else is in .venv (the dev
# group of someone who also runs the tests), so serving and testing do not undo each other.
"${UV[@]}" sync --frozen --extra server --no-dev --inexact --quiet
# --no-sync: the environment was just synced; a plain `uv run` would also install the dev group.
exec "${UV[@]}" run --frozen --no-sync dtm serve "$@"
