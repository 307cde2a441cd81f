#!/usr/bin/env bash
# Make sure the services the tests use accept connections on 127.0.0.1:
#   PostgreSQL 5432, MariaDB 3306, Redis 6379.
# A service that does not answer is started with the command this machine kind documents, then
# waited for (at most ENSURE_SERVICES_TIMEOUT seconds, default 30). Exits non-zero, naming the
# service, when one cannot be brought up.
set -euo pipefail

TIMEOUT=${ENSURE_SERVICES_TIMEOUT:-30}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Each check uses the service's own client when it is installed (it proves the server answers,
# not only that the port is open) and falls back to a bare TCP connect.
postgres_up() {
    if command -v pg_isready >/dev/null; then
        pg_isready -q -h 127.0.0.1 -p 5432 -t 2
    else
        port_open 5432
    fi
}

mariadb_up() {
    # mariadb-admin ping exits 0 whenever the server runs, even if it refuses the login.
    if command -v mariadb-admin >/dev/null; then
        mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping \
            >/dev/null 2>&1
    else
        port_open 3306
    fi
}

redis_up() {
    if command -v redis-cli >/dev/null; then
        [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]
    else
        port_open 6379
    fi
}

postgres_start() {
    # shellcheck disable=SC2046  # one cluster version directory, as the machine documents
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
}

mariadb_start() {
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}

redis_start() {
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

# ensure NAME: checks NAME_up, else runs NAME_start and polls NAME_up until TIMEOUT.
ensure() {
    local name=$1 label=$2
    if "${name}_up"; then
        echo "ensure-services: $label is up" >&2
        return 0
    fi
    echo "ensure-services: $label is down; starting it" >&2
    if ! "${name}_start"; then
        echo "ensure-services: the start command for $label failed; waiting anyway" >&2
    fi
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if "${name}_up"; then
            echo "ensure-services: $label is up" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "ensure-services: ERROR: $label does not accept connections on 127.0.0.1" \
        "after ${TIMEOUT}s" >&2
    return 1
}

failed=()
ensure postgres "PostgreSQL (5432)" || failed+=(PostgreSQL)
ensure mariadb "MariaDB (3306)" || failed+=(MariaDB)
ensure redis "Redis (6379)" || failed+=(Redis)
if ((${#failed[@]} > 0)); then
    echo "ensure-services: ERROR: could not bring up: ${failed[*]}" >&2
    exit 1
fi
