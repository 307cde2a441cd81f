# shellcheck shell=bash
# Shared by the set-up scripts (sourced, not run): find or install uv, install Debian packages.
# Nothing here downloads a Python: the machine's python3 is used.
export UV_PYTHON_DOWNLOADS=never

# Sets UV to the command that runs uv, installing uv with pip when there is none.
# `python3 -m uv` works right after a pip install, before a shell or pyenv shim knows about it.
# shellcheck disable=SC2034  # UV is read by the scripts that source this file
find_uv() {
    if uv --version >/dev/null 2>&1; then
        UV=(uv)
    elif python3 -m uv --version >/dev/null 2>&1; then
        UV=(python3 -m uv)
    else
        echo "$(basename "$0"): uv not found; installing it with pip" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
        UV=(python3 -m uv)
    fi
}

# Installs the Debian packages named that are not installed yet (apt-get update first).
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
    echo "$(basename "$0"): installing Debian packages: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
}
