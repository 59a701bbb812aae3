#!/usr/bin/env bash
# Start a PgBouncer in TRANSACTION pool mode on 127.0.0.1:6432 in front of the
# local PostgreSQL on 127.0.0.1:5432, with no prepared-statement support.
#
#   usage: .ci/pgbouncer.sh [DIR]      (DIR defaults to /tmp/persistence-pgbouncer)
#
# Idempotent: installs Debian's pgbouncer if missing, rewrites its config in DIR,
# and (re)starts it, replacing one left running on 6432 by an earlier run.
# Runs as root; PgBouncer itself runs as the `postgres` system user.
# Everything goes to stderr except the last line on stdout: the database URL.
set -euo pipefail

DIR="${1:-/tmp/persistence-pgbouncer}"
HOST=127.0.0.1
PORT=6432
PG_HOST=127.0.0.1
PG_PORT=5432
RUN_AS=postgres

log() { printf 'pgbouncer.sh: %s\n' "$*" >&2; }

# --- install ------------------------------------------------------------------
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  log "installing pgbouncer (apt)"
  export DEBIAN_FRONTEND=noninteractive
  aptlog="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends pgbouncer; } >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    log "ERROR: apt-get install pgbouncer failed"
    exit 1
  fi
  rm -f "$aptlog"
fi
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
VERSION="$("$PGBOUNCER" --version | awk 'NR==1 {print $2}')"
log "using PgBouncer $VERSION"

# --- stop whatever PgBouncer already listens on our port ----------------------
pid_alive() { # running, and not a zombie (PID 1 in containers may not reap)
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
stop_pid() { # stop_pid PID: TERM, wait up to 10 s, then KILL
  local pid="$1" i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do pid_alive "$pid" || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM, killing it"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}
port_pids() { # pids of pgbouncer processes listening on $PORT
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u |
      while read -r p; do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = pgbouncer ] && echo "$p"
      done
  fi
  return 0
}
port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
  fi
}

# Our own earlier run, then Debian's packaged service (which, on a machine that
# starts services, also listens on 6432), then any other pgbouncer on the port.
for pidfile in "$DIR/pgbouncer.pid" /run/postgresql/pgbouncer.pid /var/run/postgresql/pgbouncer.pid; do
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if pid_alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pgbouncer ]; then
      log "stopping running PgBouncer (pid $pid from $pidfile)"
      stop_pid "$pid"
    fi
    [ "$pidfile" = "$DIR/pgbouncer.pid" ] && rm -f "$pidfile"
  fi
done
for pid in $(port_pids); do
  log "stopping PgBouncer pid $pid still listening on $PORT"
  stop_pid "$pid"
done
if port_in_use; then
  log "ERROR: something other than PgBouncer listens on $HOST:$PORT"
  exit 1
fi

# --- config -------------------------------------------------------------------
mkdir -p "$DIR"
chown "$RUN_AS:" "$DIR"
chmod 0750 "$DIR"

# auth_type = trust still requires the user to be listed in auth_file.
cat >"$DIR/userlist.txt" <<'EOF'
"postgres" ""
EOF

PREPARED=""
# max_prepared_statements exists from PgBouncer 1.21 on; 0 keeps it disabled.
if printf '%s\n%s\n' 1.21.0 "$VERSION" | sort -V -C; then
  PREPARED="max_prepared_statements = 0"
fi

cat >"$DIR/pgbouncer.ini" <<EOF
; written by .ci/pgbouncer.sh - overwritten on every run
[databases]
; any database name (the test suite creates persistence_test_* databases)
* = host=$PG_HOST port=$PG_PORT

[pgbouncer]
listen_addr = $HOST
listen_port = $PORT
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
: >"$DIR/pgbouncer.log"
chown "$RUN_AS:" "$DIR/pgbouncer.log"

# --- start --------------------------------------------------------------------
log "starting PgBouncer on $HOST:$PORT (transaction pooling) -> $PG_HOST:$PG_PORT, config in $DIR"
if ! su "$RUN_AS" -s /bin/sh -c "exec '$PGBOUNCER' -d -q '$DIR/pgbouncer.ini'" >&2; then
  log "ERROR: pgbouncer failed to start; log follows"
  cat "$DIR/pgbouncer.log" >&2 || true
  exit 1
fi

for _ in $(seq 1 100); do
  if [ -s "$DIR/pgbouncer.pid" ] && pid_alive "$(cat "$DIR/pgbouncer.pid")" && port_in_use; then
    break
  fi
  sleep 0.1
done
if ! { [ -s "$DIR/pgbouncer.pid" ] && pid_alive "$(cat "$DIR/pgbouncer.pid")" && port_in_use; }; then
  log "ERROR: PgBouncer did not come up on $HOST:$PORT; log follows"
  cat "$DIR/pgbouncer.log" >&2 || true
  exit 1
fi

# End to end: a query through the pooler reaches the server.
if command -v psql >/dev/null 2>&1; then
  ok=""
  for _ in $(seq 1 50); do
    if [ "$(psql "postgresql://postgres@$HOST:$PORT/postgres" -XAtqc 'SELECT 1' 2>/dev/null)" = 1 ]; then
      ok=1
      break
    fi
    sleep 0.2
  done
  if [ -z "$ok" ]; then
    log "ERROR: cannot query through PgBouncer; log follows"
    cat "$DIR/pgbouncer.log" >&2 || true
    exit 1
  fi
fi
log "PgBouncer up (pid $(cat "$DIR/pgbouncer.pid"))"

echo "postgresql://postgres@$HOST:$PORT/postgres"
