#!/usr/bin/env bash
# Start a private PgBouncer in TRANSACTION pool mode with no prepared-statement support, on
# 127.0.0.1 and a free port, in front of the local PostgreSQL on 127.0.0.1:5432 (used as a
# client only). It touches nothing it did not start: its config, log and pid file live in DIR,
# and any other PgBouncer (Debian's service on 6432, say) is left alone.
#
#   usage: .ci/pgbouncer.sh [DIR]       start; DIR defaults to a new temporary folder,
#                                       removed when PgBouncer stops
#          .ci/pgbouncer.sh stop DIR    stop the PgBouncer started with DIR
#
# PgBouncer stops when the process $PERSISTENCE_OWNER_PID (default: the caller, see lib.sh)
# exits, even if it is killed: a small supervisor, in a session of its own, runs it and
# follows that process.
# Installs Debian's pgbouncer if missing (apt); runs as root, PgBouncer as the `postgres` user.
# Everything goes to stderr except the last line on stdout: the database URL.
set -euo pipefail

HOST=127.0.0.1
PG_HOST=127.0.0.1
PG_PORT=5432
RUN_AS=postgres

log() { printf 'pgbouncer.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

ours() { # ours DIR PID: PID is a running PgBouncer started with DIR's config
  started "$2" >/dev/null && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = pgbouncer ] &&
    tr '\0' ' ' 2>/dev/null <"/proc/$2/cmdline" | grep -qF "$1/pgbouncer.ini"
}

stop() { # stop DIR
  local dir="$1" pid
  pid="$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! ours "$dir" "$pid"; then
    log "no PgBouncer started from $dir is running"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 200); do
    if ! ours "$dir" "$pid"; then
      log "stopped PgBouncer (pid $pid)"
      if [ -e "$dir/.temporary" ]; then rm -rf "$dir"; fi
      return 0
    fi
    sleep 0.05
  done
  die "PgBouncer (pid $pid) did not stop"
}

if [ "${1:-}" = stop ]; then
  [ -n "${2:-}" ] || die "usage: $0 stop DIR"
  stop "$2"
  exit 0
fi

OWNER="$(owner_pid)"
OWNER_STARTED="$(started "$OWNER")" || die "the owner process $OWNER is not running"
if [ -n "${1:-}" ]; then
  DIR="$1"
else # a folder of its own, removed when PgBouncer stops
  DIR="$(mktemp -d /tmp/persistence-pgbouncer.XXXXXX)"
  touch "$DIR/.temporary"
fi

# --- install ------------------------------------------------------------------
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  log "installing pgbouncer (apt)"
  export DEBIAN_FRONTEND=noninteractive
  aptlog="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends pgbouncer; } >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    die "apt-get install pgbouncer failed"
  fi
  rm -f "$aptlog"
fi
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
VERSION="$("$PGBOUNCER" --version | awk 'NR==1 {print $2}')"
log "using PgBouncer $VERSION"

# --- config -------------------------------------------------------------------
PREPARED=""
# max_prepared_statements exists from PgBouncer 1.21 on; 0 keeps it disabled.
if printf '%s\n%s\n' 1.21.0 "$VERSION" | sort -V -C; then
  PREPARED="max_prepared_statements = 0"
fi

mkdir -p "$DIR"
chown "$RUN_AS:" "$DIR"
chmod 0750 "$DIR"
runuser -u "$RUN_AS" -- test -w "$DIR" ||
  die "the $RUN_AS user cannot write in $DIR: its parent folders must let it through (chmod o+x)"
# auth_type = trust still requires the user to be listed in auth_file.
printf '"postgres" ""\n' >"$DIR/userlist.txt"

write_config() { # write_config PORT
  cat >"$DIR/pgbouncer.ini" <<EOF
; written by .ci/pgbouncer.sh
[databases]
; any database name (the test suite creates persistence_test_* databases)
* = host=$PG_HOST port=$PG_PORT

[pgbouncer]
listen_addr = $HOST
listen_port = $1
unix_socket_dir =
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid

auth_type = trust
auth_file = $DIR/userlist.txt
admin_users = postgres
stats_users = postgres

pool_mode = transaction
$PREPARED
max_client_conn = 500
default_pool_size = 40
min_pool_size = 0
reserve_pool_size = 0
; drop idle server connections quickly, so throwaway databases can be dropped
server_idle_timeout = 10
server_lifetime = 3600
ignore_startup_parameters = extra_float_digits
EOF
  chown "$RUN_AS:" "$DIR/pgbouncer.ini" "$DIR/userlist.txt"
  chmod 0640 "$DIR/pgbouncer.ini" "$DIR/userlist.txt"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The supervisor: PgBouncer is its child (so it is reaped), stopped once the owner is gone.
SUPERVISOR="$(declare -f started)"'
owner="$1" owner_started="$2" pgbouncer="$3" dir="$4"
"$pgbouncer" -q -u postgres "$dir/pgbouncer.ini" &
child=$!
while [ "$(started "$owner")" = "$owner_started" ] && started "$child" >/dev/null; do
  sleep 0.5
done
kill -TERM "$child" 2>/dev/null
wait "$child"
if [ -e "$dir/.temporary" ] && [ "$(started "$owner")" != "$owner_started" ]; then
  rm -rf "$dir"
fi
'

# --- start --------------------------------------------------------------------
up=""
for _ in 1 2 3 4 5; do
  PORT="$(free_port)"
  write_config "$PORT"
  : >"$DIR/pgbouncer.log"
  chown "$RUN_AS:" "$DIR/pgbouncer.log"
  # No descriptor of ours is left open in it: `URL=$(.ci/pgbouncer.sh)` returns at once.
  setsid bash -c "$SUPERVISOR" supervisor "$OWNER" "$OWNER_STARTED" "$PGBOUNCER" "$DIR" \
    </dev/null >/dev/null 2>>"$DIR/supervisor.log" &
  supervisor=$!
  for _ in $(seq 1 200); do
    pid="$(cat "$DIR/pgbouncer.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && ours "$DIR" "$pid" && grep -q "listening on $HOST:$PORT" "$DIR/pgbouncer.log"; then
      up=1
      break
    fi
    started "$supervisor" >/dev/null || break # PgBouncer exited, and its supervisor with it
    sleep 0.05
  done
  [ -n "$up" ] && break
  # Another process may take the free port between the probe and the bind: try another.
  grep -q "Address already in use" "$DIR/pgbouncer.log" || break
done
if [ -z "$up" ]; then
  cat "$DIR/pgbouncer.log" "$DIR/supervisor.log" >&2 || true
  stop "$DIR" || true
  die "PgBouncer did not come up on $HOST (log above)"
fi
URL="postgresql://postgres@$HOST:$PORT/postgres"

# End to end: a query through the pooler reaches the server.
if command -v psql >/dev/null 2>&1; then
  if [ "$(PGCONNECT_TIMEOUT=10 psql "$URL" -XAtqc 'SELECT 1' 2>&1)" != 1 ]; then
    cat "$DIR/pgbouncer.log" >&2 || true
    stop "$DIR" || true
    die "cannot query $PG_HOST:$PG_PORT through PgBouncer (log above)"
  fi
fi
log "PgBouncer up on $HOST:$PORT (pid $pid, transaction pooling) -> $PG_HOST:$PG_PORT," \
  "config in $DIR; it stops when process $OWNER exits, or with: .ci/pgbouncer.sh stop $DIR"

echo "$URL"
