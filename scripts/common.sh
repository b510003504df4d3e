# Shared by scripts/demo and scripts/test: install what is missing, build, and
# run a throwaway Postgres (unprivileged user, private directory, free port on
# 127.0.0.1, stopped when the calling script exits). Source it, don't run it.

VOUCHERD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=${PG_OS_USER:-voucherd-pg}

say() { printf '%s\n' "$*" >&2; }

# The cluster this shell started, if any: pg_stop only ever stops that one,
# whatever PG_DIR the environment may hold. Likewise pg_tls_stop.
pg_owned_dir=
# Likewise the pgbouncer this shell started (its directory).
pgbouncer_owned_dir=
pg_tls_owned_dir=

# Debian packages the build, the tests and the servers need.
VOUCHERD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libpq-dev libpqxx-dev libfmt-dev doctest-dev libhiredis-dev libssl-dev openssl curl
  libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev
  postgresql-15 postgresql-contrib redis-server pgbouncer
  systemd  # systemd-analyze verify, for the unit in scripts/
  prometheus  # promtool check metrics, for /metrics
)

install_deps() {
  local missing=()
  for p in "${VOUCHERD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The server packages must not start system-wide services here.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

build_voucherd() {  # build_voucherd BUILD_DIR [cmake args...]
  local dir=$1; shift
  cmake -S "$VOUCHERD_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)"
}

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  say "no free port found"; return 1
}

# pg_start [postgres -c settings...]: sets PG_DIR, PG_PORT, PG_ADMIN_URL.
pg_start() {
  id -u "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
  PG_DIR=$(mktemp -d /tmp/voucherd-pg.XXXXXX)
  chown "$PG_OS_USER" "$PG_DIR"
  chmod 700 "$PG_DIR"
  PG_PORT=$(free_port)
  runuser -u "$PG_OS_USER" -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >/dev/null
  local opts="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR"
  opts+=" -c max_connections=300 -c shared_buffers=256MB"
  for s in "$@"; do opts+=" -c $s"; done
  runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -o "$opts" -w start >/dev/null
  PG_ADMIN_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  pg_owned_dir=$PG_DIR
  trap pg_stop_all EXIT
  say "postgres running on 127.0.0.1:$PG_PORT (data in $PG_DIR)"
}

# pg_stop_dir DIR: stops the cluster in DIR/data (if any) and removes DIR.
pg_stop_dir() {
  if [ -n "$1" ] && [ -d "$1/data" ]; then
    runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$1"
  fi
}

pg_stop() {
  pg_stop_dir "$pg_owned_dir"
  pg_owned_dir=
}

# pgbouncer_start HOST PORT: a transaction-pooling PgBouncer in front of the
# Postgres at HOST:PORT (trust auth like the test cluster; one wildcard entry,
# so that every database a test creates is reachable through it); sets
# PGBOUNCER_DIR and PGBOUNCER_PORT. Runs as PG_OS_USER; stopped on exit.
pgbouncer_start() {
  local pg_host=$1 pg_port=$2
  PGBOUNCER_DIR=$(mktemp -d /tmp/voucherd-pgbouncer.XXXXXX)
  PGBOUNCER_PORT=$(free_port)
  # trust still wants the user name in auth_file.
  printf '"postgres" ""\n' > "$PGBOUNCER_DIR/userlist.txt"
  cat > "$PGBOUNCER_DIR/pgbouncer.ini" <<EOF
[databases]
* = host=$pg_host port=$pg_port

[pgbouncer]
pool_mode = transaction
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGBOUNCER_DIR/userlist.txt
max_client_conn = 2000
default_pool_size = 20
logfile = $PGBOUNCER_DIR/pgbouncer.log
pidfile = $PGBOUNCER_DIR/pgbouncer.pid
EOF
  chown -R "$PG_OS_USER" "$PGBOUNCER_DIR"
  runuser -u "$PG_OS_USER" -- pgbouncer -d -q "$PGBOUNCER_DIR/pgbouncer.ini"
  pgbouncer_owned_dir=$PGBOUNCER_DIR
  trap pg_stop_all EXIT
  local i
  for i in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PGBOUNCER_PORT") 2>/dev/null && break
    sleep 0.1
  done
  say "pgbouncer (transaction pooling) on 127.0.0.1:$PGBOUNCER_PORT in front of $pg_host:$pg_port"
}

pgbouncer_stop() {
  if [ -n "$pgbouncer_owned_dir" ] && [ -f "$pgbouncer_owned_dir/pgbouncer.pid" ]; then
    kill "$(cat "$pgbouncer_owned_dir/pgbouncer.pid")" 2>/dev/null || true
    rm -rf "$pgbouncer_owned_dir"
  fi
  pgbouncer_owned_dir=
}

# pg_start_tls: a second throwaway Postgres as production runs one: ssl = on
# with a server certificate for localhost and 127.0.0.1 signed by a CA made
# here with the openssl CLI, and TCP only over hostssl with scram-sha-256
# passwords (a plain connection finds no pg_hba.conf entry). The superuser
# reaches it over its Unix socket only (trust), to create databases and
# roles. Exports for the tests: VOUCHERD_TEST_TLS_SOCKET (the socket
# directory), VOUCHERD_TEST_TLS_PORT, VOUCHERD_TEST_TLS_CA (the CA that
# signed the server) and VOUCHERD_TEST_TLS_WRONG_CA (a CA that did not).
pg_start_tls() {
  id -u "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
  local dir port
  dir=$(mktemp -d /tmp/voucherd-pgtls.XXXXXX)
  port=$(free_port)
  local certs=$dir/certs
  mkdir "$certs"
  (
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=voucherd test CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=voucherd wrong CA" \
      -keyout wrong-ca.key -out wrong-ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f ca.key wrong-ca.key server.csr server.ext ca.srl
    chmod 600 server.key
  )
  chown -R "$PG_OS_USER" "$dir"
  chmod 700 "$dir"
  chmod 755 "$certs"
  chmod 644 "$certs/ca.crt" "$certs/wrong-ca.crt"
  runuser -u "$PG_OS_USER" -- "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >/dev/null
  cat > "$dir/data/pg_hba.conf" <<HBA
local   all  postgres                  trust
hostssl all  all       127.0.0.1/32   scram-sha-256
HBA
  local opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir"
  opts+=" -c ssl=on -c ssl_cert_file=$certs/server.crt -c ssl_key_file=$certs/server.key"
  opts+=" -c password_encryption=scram-sha-256 -c max_connections=100 -c fsync=off"
  runuser -u "$PG_OS_USER" -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w start >/dev/null
  pg_tls_owned_dir=$dir
  trap pg_stop_all EXIT
  export VOUCHERD_TEST_TLS_SOCKET=$dir VOUCHERD_TEST_TLS_PORT=$port
  export VOUCHERD_TEST_TLS_CA=$certs/ca.crt VOUCHERD_TEST_TLS_WRONG_CA=$certs/wrong-ca.crt
  say "postgres with TLS (hostssl + scram only) on 127.0.0.1:$port (data in $dir)"
}

pg_tls_stop() {
  pg_stop_dir "$pg_tls_owned_dir"
  pg_tls_owned_dir=
}

# What pg_start, pg_start_tls and pgbouncer_start leave to the EXIT trap,
# in any order.
pg_stop_all() {
  pgbouncer_stop
  pg_tls_stop
  pg_stop
}
