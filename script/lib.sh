# Shared by script/server and script/test: find or start PostgreSQL and Redis.
#
# 1. If PostgreSQL and Redis answer on their standard local ports (or at DATABASE_URL/REDIS_URL
#    when those are set), use them.
# 2. Else, if their binaries are installed, start private instances under .crewkit/ on ports
#    55432 and 56379 (Redis with appendonly and noeviction, as production should run it).
# 3. Else install them with apt-get when running as root, or say exactly what to install.
#
# Private instances started here are stopped by stop_private_services (the callers trap EXIT).
# CREWKIT_PRIVATE_SERVICES=1 forces private instances even when system ones answer.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/.crewkit"
STARTED_PG=""
STARTED_REDIS=""

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

install_packages() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "PostgreSQL and Redis are needed. Install them (Debian/Ubuntu: sudo apt-get install $*) or set DATABASE_URL and REDIS_URL."
  fi
}

start_private_pg() {
  local bin port=55432 dir="$DATA/pg"
  bin="$(pg_bindir)" || { install_packages postgresql; bin="$(pg_bindir)"; }
  mkdir -p "$DATA"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse to run as root.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as=(runuser -u postgres --)
  fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    say "creating a private PostgreSQL in $dir"
    mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres "$dir" "$DATA"
    "${as[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! port_open 127.0.0.1 $port; then
    say "starting private PostgreSQL on 127.0.0.1:$port"
    "${as[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    STARTED_PG="$bin/pg_ctl -D $dir"
    [ "$(id -u)" = 0 ] && STARTED_PG="runuser -u postgres -- $STARTED_PG"
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/crewkit"
}

start_private_redis() {
  local port=56379 dir="$DATA/redis"
  command -v redis-server >/dev/null 2>&1 || install_packages redis-server
  mkdir -p "$dir"
  if ! port_open 127.0.0.1 $port; then
    say "starting private Redis on 127.0.0.1:$port (appendonly, noeviction)"
    redis-server --port $port --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync everysec \
      --maxmemory-policy noeviction --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save ""
    for _ in $(seq 50); do port_open 127.0.0.1 $port && break; sleep 0.1; done
    STARTED_REDIS="$dir/redis.pid"
  fi
  export REDIS_URL="redis://127.0.0.1:$port"
}

# Host and port of a URL like scheme://[user@]host[:port]/...
url_host() { local r="${1#*://}"; r="${r%%/*}"; r="${r##*@}"; echo "${r%%:*}"; }
url_port() { local r="${1#*://}"; r="${r%%/*}"; r="${r##*@}"; case "$r" in *:*) echo "${r##*:}";; *) echo "$2";; esac; }

ensure_services() {
  local db_url="${DATABASE_URL:-postgres://localhost/crewkit}" redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
  if [ "${CREWKIT_PRIVATE_SERVICES:-}" != 1 ] && port_open "$(url_host "$db_url")" "$(url_port "$db_url" 5432)"; then
    export DATABASE_URL="$db_url"
  else
    start_private_pg
  fi
  if [ "${CREWKIT_PRIVATE_SERVICES:-}" != 1 ] && port_open "$(url_host "$redis_url")" "$(url_port "$redis_url" 6379)"; then
    export REDIS_URL="$redis_url"
  else
    start_private_redis
  fi
  # sqlx and psql need a user name; services and CI may run without $USER.
  export USER="${USER:-$(id -un)}"
  ensure_database "$DATABASE_URL"
  say "PostgreSQL: $DATABASE_URL   Redis: $REDIS_URL"
}

# Creates the URL's database if it does not exist (needs psql, which comes with the server).
ensure_database() {
  local url="$1" name maint
  name="${url##*/}"; name="${name%%\?*}"
  maint="${url%/*}/postgres"
  command -v psql >/dev/null 2>&1 || return 0
  if ! psql "$maint" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" 2>/dev/null | grep -q 1; then
    say "creating database $name"
    psql "$maint" -qc "CREATE DATABASE \"$name\"" >/dev/null
  fi
}

stop_private_services() {
  if [ -n "$STARTED_REDIS" ] && [ -f "$STARTED_REDIS" ]; then
    kill "$(cat "$STARTED_REDIS")" 2>/dev/null || true
  fi
  if [ -n "$STARTED_PG" ]; then
    $STARTED_PG -m fast stop >/dev/null 2>&1 || true
  fi
}
