#!/usr/bin/env bash
# Make sure the services the test suite talks to are installed and running:
# PostgreSQL on 127.0.0.1:5432 accepting the `postgres` user without a password,
# the OpenLDAP binaries (slapd, slapadd, ldap-utils) that the LDAP test
# fixture (tests/ldap_server.py) runs unprivileged from a temporary folder.
set -euo pipefail

PG_PORT=5432

log() { echo "ensure-services: $*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_postgres() {
  log "installing PostgreSQL from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A disposable test server: trust loopback connections, as the test machines do.
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
}

install_slapd() {
  log "installing OpenLDAP (slapd, ldap-utils) from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq slapd ldap-utils >/dev/null
  # The package starts a system slapd with its own configuration; the tests
  # never use it (they run their own from a temporary folder), so stop it.
  # Only the system service is stopped (by its pid file), never test instances.
  as_root service slapd stop >/dev/null 2>&1 || true
}

if ! command -v slapd >/dev/null 2>&1 && [ ! -x /usr/sbin/slapd ]; then
  install_slapd
fi
[ -x /usr/sbin/slapd ] || { log "slapd is not installed"; exit 1; }
log "OpenLDAP $(/usr/sbin/slapd -VV 2>&1 | sed -n 's/.*slapd \([0-9.]*\).*/\1/p' | head -n 1) installed"

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  install_postgres
fi

if ! pg_isready -h 127.0.0.1 -p "$PG_PORT" -q; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p "$PG_PORT" -q && break
    sleep 1
  done
fi

pg_isready -h 127.0.0.1 -p "$PG_PORT" -q || { log "PostgreSQL did not start"; exit 1; }
log "PostgreSQL ready on 127.0.0.1:$PG_PORT"

# Redis on 127.0.0.1:6379 (issue 13, class 6): throttling counts shared by two
# application instances (tests/attacks/test_throttling.py).
REDIS_PORT=6379
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing Redis from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 30); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 1
  done
fi
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 || { log "Redis did not start"; exit 1; }
log "Redis ready on 127.0.0.1:$REDIS_PORT"

# PgBouncer for tests/integration/test_pgbouncer.py (the change listener behind a
# transaction-pooling proxy); the tests run their own from a temporary folder.
if [ ! -x /usr/sbin/pgbouncer ] && ! command -v pgbouncer >/dev/null 2>&1; then
  log "installing PgBouncer from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq pgbouncer >/dev/null
  as_root service pgbouncer stop >/dev/null 2>&1 || true
fi
log "PgBouncer installed"
