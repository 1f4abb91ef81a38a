# Makes sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer.
# Sourced by scripts/test and .ci/run. Uses running servers when there are
# some, starts installed ones when they are stopped, and installs what is
# missing with apt-get when running as root (VALORA_INSTALL_SERVICES=0 to
# forbid that). Also gets the browser test's tools: Debian's chromium and
# playwright-core (npm ci in tests/browser).

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

wait_for() { # name check-function
  for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
  echo "services: $1 did not come up" >&2; return 1
}

install_packages() {
  [ "${VALORA_INSTALL_SERVICES:-1}" = "1" ] || return 1
  [ "$(id -u)" = "0" ] || { echo "services: need root to install $*" >&2; return 1; }
  command -v apt-get >/dev/null 2>&1 || { echo "services: no apt-get to install $*" >&2; return 1; }
  echo "services: installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
}

start_postgres() {
  pg_up && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && ! command -v pg_ctlcluster >/dev/null 2>&1; then
    install_packages postgresql postgresql-client || { echo "services: PostgreSQL is not installed" >&2; return 1; }
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || { echo "services: no PostgreSQL cluster found" >&2; return 1; }
  # Tests connect as postgres over TCP without a password: trust loopback only.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -w "$hba" ] && ! grep -q "valora-test" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # valora-test\nhost all all ::1/128 trust # valora-test' "$hba"
  fi
  echo "services: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster "$version" main start 2>/dev/null \
    || pg_ctlcluster "$version" main reload 2>/dev/null || true
  wait_for PostgreSQL pg_up
}

start_redis() {
  redis_up && return 0
  command -v redis-server >/dev/null 2>&1 || install_packages redis-server \
    || { echo "services: Redis is not installed" >&2; return 1; }
  echo "services: starting Redis"
  mkdir -p /tmp/valora-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/valora-redis --logfile /tmp/valora-redis/redis.log
  wait_for Redis redis_up
}

ensure_browser_tools() {
  [ -x /usr/bin/chromium ] || install_packages chromium \
    || { echo "services: chromium is missing (browser test)" >&2; return 1; }
  command -v npm >/dev/null 2>&1 || install_packages nodejs npm \
    || { echo "services: node/npm are missing (browser test)" >&2; return 1; }
  [ -d tests/browser/node_modules/playwright-core ] \
    || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
}

ensure_services() {
  command -v pg_isready >/dev/null 2>&1 || command -v psql >/dev/null 2>&1 \
    || install_packages postgresql-client || true
  command -v redis-cli >/dev/null 2>&1 || install_packages redis-tools || true
  start_postgres && start_redis && ensure_browser_tools
}
