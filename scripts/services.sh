# Sourced by scripts/test: makes sure the services the tests talk to are up.
#
# A service that is installed locally but stopped is started; one that cannot be reached
# afterwards fails the run with one line naming it and how to start it. Tests never skip.
# Point tests at other instances with the env vars below.

: "${COURIER_TEST_POSTGRES_URL:=postgres://postgres@127.0.0.1:5432/test}"
: "${COURIER_TEST_NATS_URL:=nats://127.0.0.1:4222}"
: "${COURIER_TEST_REDIS_URL:=redis://127.0.0.1:6379}"
: "${COURIER_TEST_AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
export COURIER_TEST_POSTGRES_URL COURIER_TEST_NATS_URL COURIER_TEST_REDIS_URL COURIER_TEST_AMQP_URL

# host and port of a URL like scheme://user@host:port/db
url_host() { local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}; echo "${rest%%:*}"; }
url_port() { local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}; [[ $rest == *:* ]] && echo "${rest##*:}" || echo "$2"; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for_port() {
    local host=$1 port=$2 tries=60
    while ((tries-- > 0)); do
        port_open "$host" "$port" && return 0
        sleep 0.5
    done
    return 1
}

# require NAME URL DEFAULT_PORT START_HINT START_COMMAND...
require_service() {
    local name=$1 url=$2 default_port=$3 hint=$4
    shift 4
    local host port
    host=$(url_host "$url")
    port=$(url_port "$url" "$default_port")
    if port_open "$host" "$port"; then
        return 0
    fi
    if [[ $host == 127.0.0.1 || $host == localhost ]] && [[ $port == "$default_port" ]] && command -v "$1" >/dev/null 2>&1; then
        echo "== starting $name (not reachable at $host:$port)"
        "$@" >/dev/null 2>&1 || true
        wait_for_port "$host" "$port" && return 0
    fi
    echo "error: $name is not reachable at $host:$port; start it ($hint) or point the tests elsewhere" >&2
    exit 1
}

require_postgres() {
    require_service PostgreSQL "$COURIER_TEST_POSTGRES_URL" 5432 \
        "pg_ctlcluster \$(ls /etc/postgresql) main start, or set COURIER_TEST_POSTGRES_URL" \
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql 2>/dev/null | head -n1)" main start
}

require_nats() {
    require_service "NATS (JetStream)" "$COURIER_TEST_NATS_URL" 4222 \
        "nats-server -js, or set COURIER_TEST_NATS_URL" \
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
}

require_redis() {
    require_service Redis "$COURIER_TEST_REDIS_URL" 6379 \
        "redis-server --daemonize yes, or set COURIER_TEST_REDIS_URL" \
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

require_rabbitmq() {
    require_service RabbitMQ "$COURIER_TEST_AMQP_URL" 5672 \
        "rabbitmq-server -detached, or set COURIER_TEST_AMQP_URL" \
        rabbitmq-server -detached
}
