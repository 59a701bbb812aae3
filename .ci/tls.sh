#!/usr/bin/env bash
# Make the local PostgreSQL (Debian cluster 15/main on 127.0.0.1:5432) serve TLS
# and add a SCRAM-password role that may only log in over TLS:
#
#   role persistence_tls  LOGIN CREATEDB  PASSWORD $TLS_PASSWORD (default tls-Secret-42)
#   pg_hba (at the top):  hostssl   all persistence_tls 127.0.0.1/32 scram-sha-256
#                         hostnossl all persistence_tls 127.0.0.1/32 reject
#                         (the same for ::1/128, and `local ... reject`)
#
# Everything else (trust for the other users, the existing databases) is left as is.
# Idempotent; runs as root. Everything goes to stderr except the last line on
# stdout: the database URL for that role.
#
# Env overrides: TLS_PASSWORD, PG_VERSION (15), PG_CLUSTER (main), PG_PORT (5432).
set -euo pipefail

PG_VERSION="${PG_VERSION:-15}"
PG_CLUSTER="${PG_CLUSTER:-main}"
PG_PORT="${PG_PORT:-5432}"
HOST=127.0.0.1
ROLE=persistence_tls
PASSWORD="${TLS_PASSWORD:-tls-Secret-42}"
CONF_DIR="/etc/postgresql/$PG_VERSION/$PG_CLUSTER"
CERT=/etc/ssl/certs/ssl-cert-snakeoil.pem
KEY=/etc/ssl/private/ssl-cert-snakeoil.key
BEGIN_MARK="# BEGIN persistence-tls (managed by .ci/tls.sh)"
END_MARK="# END persistence-tls"

log() { printf 'tls.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cd /  # the postgres user must be able to stat the cwd

[ -d "$CONF_DIR" ] || die "no PostgreSQL cluster config at $CONF_DIR"

# --- packages -----------------------------------------------------------------
if ! dpkg-query -W -f='${Status}' ssl-cert 2>/dev/null | grep -q 'install ok installed'; then
  log "installing ssl-cert (apt)"
  export DEBIAN_FRONTEND=noninteractive
  aptlog="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends ssl-cert; } >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    die "apt-get install ssl-cert failed"
  fi
  rm -f "$aptlog"
fi

# --- server control -----------------------------------------------------------
psql_admin() { # psql as the postgres superuser over the Unix socket (peer or trust)
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"
}
wait_ready() {
  local i
  for i in $(seq 1 150); do
    if pg_isready -q -h "$HOST" -p "$PG_PORT" -t 1 && psql_admin -Atc 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  die "PostgreSQL on $HOST:$PG_PORT does not accept connections (see /var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log)"
}
pgctl() { pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" "$@" >&2; }

if ! pg_isready -q -h "$HOST" -p "$PG_PORT" -t 1; then
  log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
  pgctl start || true
fi
wait_ready

# --- certificate and key ------------------------------------------------------
if [ ! -s "$CERT" ] || [ ! -s "$KEY" ]; then
  log "generating the snakeoil certificate"
  if ! make-ssl-cert generate-default-snakeoil --force-overwrite >&2 2>&1; then
    log "make-ssl-cert failed; generating the snakeoil pair with openssl"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$KEY" -out "$CERT" >/dev/null 2>&1 || die "openssl could not make a certificate"
    chown root:ssl-cert "$KEY"
    chmod 0640 "$KEY"
    chmod 0644 "$CERT"
  fi
fi
# PostgreSQL reads the key as the postgres user: group ssl-cert gives that.
if ! id -nG postgres | tr ' ' '\n' | grep -qx ssl-cert; then
  log "adding postgres to group ssl-cert"
  usermod -a -G ssl-cert postgres
fi
SSL_CERT="$CERT"
SSL_KEY="$KEY"
if ! runuser -u postgres -- test -r "$KEY"; then
  # Fall back to a private copy owned by postgres (mode 0600 is what the server wants).
  log "$KEY not readable by postgres; using a private copy in $CONF_DIR/ssl"
  install -d -o postgres -g postgres -m 0700 "$CONF_DIR/ssl"
  install -o postgres -g postgres -m 0600 "$KEY" "$CONF_DIR/ssl/server.key"
  install -o postgres -g postgres -m 0644 "$CERT" "$CONF_DIR/ssl/server.crt"
  SSL_CERT="$CONF_DIR/ssl/server.crt"
  SSL_KEY="$CONF_DIR/ssl/server.key"
fi

# --- postgresql.conf (a conf.d file; Debian's postgresql.conf includes conf.d last)
install -d -o postgres -g postgres -m 0755 "$CONF_DIR/conf.d"
grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf\.d'" "$CONF_DIR/postgresql.conf" ||
  die "$CONF_DIR/postgresql.conf has no include_dir = 'conf.d'"
CONF_FILE="$CONF_DIR/conf.d/95-persistence-tls.conf"
NEW_CONF="$(cat <<EOF
# managed by .ci/tls.sh (persistence): TLS and SCRAM passwords
ssl = on
ssl_cert_file = '$SSL_CERT'
ssl_key_file = '$SSL_KEY'
password_encryption = scram-sha-256
EOF
)"
if [ ! -f "$CONF_FILE" ] || [ "$(cat "$CONF_FILE")" != "$NEW_CONF" ]; then
  log "writing $CONF_FILE"
  printf '%s\n' "$NEW_CONF" >"$CONF_FILE"
  chown postgres:postgres "$CONF_FILE"
  chmod 0644 "$CONF_FILE"
fi

# --- pg_hba.conf: our block first (rules match top-down) ------------------------
HBA="$(psql_admin -Atc 'SHOW hba_file')"
[ -f "$HBA" ] || die "pg_hba.conf not found (SHOW hba_file said '$HBA')"
BLOCK="$(cat <<EOF
$BEGIN_MARK
# $ROLE: SCRAM password, TLS only (these lines must stay above any trust rule)
hostssl   all  $ROLE  127.0.0.1/32  scram-sha-256
hostssl   all  $ROLE  ::1/128       scram-sha-256
hostnossl all  $ROLE  127.0.0.1/32  reject
hostnossl all  $ROLE  ::1/128       reject
local     all  $ROLE                reject
$END_MARK
EOF
)"
# The file without our block, and the file as it should be.
REST="$(awk -v b="$BEGIN_MARK" -v e="$END_MARK" '$0==b{skip=1;next} $0==e{skip=0;next} !skip' "$HBA")"
if [ "$(head -n "$(printf '%s\n' "$BLOCK" | wc -l)" "$HBA")" != "$BLOCK" ] ||
   [ "$(grep -cxF "$BEGIN_MARK" "$HBA")" != 1 ]; then
  log "putting the $ROLE rules at the top of $HBA"
  cp -p "$HBA" "$HBA.bak-persistence-tls"
  tmp="$(mktemp "$HBA.XXXXXX")"
  { printf '%s\n' "$BLOCK"; printf '%s\n' "$REST"; } >"$tmp"
  chown --reference="$HBA" "$tmp"
  chmod --reference="$HBA" "$tmp"
  mv "$tmp" "$HBA"
fi

# --- the role -------------------------------------------------------------------
psql_admin -v role="$ROLE" -v pw="$PASSWORD" <<'SQL' >/dev/null
SET password_encryption = 'scram-sha-256';
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN CREATEDB NOSUPERUSER PASSWORD :'pw';
SQL

# --- the URL ------------------------------------------------------------------
urlencode() {
  local LC_ALL=C s="$1" out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
      [a-zA-Z0-9.~_-]) out+="$c" ;;
      *) out+="$(printf '%%%02X' "'$c")" ;;
    esac
  done
  printf '%s' "$out"
}
URL="postgresql://$ROLE:$(urlencode "$PASSWORD")@$HOST:$PG_PORT/postgres?sslmode=require&channel_binding=require"

# --- apply: reload, and restart only if TLS does not come up ------------------
ssl_works() { # the role logs in over TLS with SCRAM and channel binding
  [ "$(PGCONNECT_TIMEOUT=5 psql "$URL" -XAtc 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>/dev/null)" = t ]
}
# Does the postmaster have the group that can read the key? (group added after it started: no)
postmaster_can_read_key() {
  local pidfile pid gid
  [ "$SSL_KEY" = "$KEY" ] || return 0
  pidfile="$(psql_admin -Atc 'SHOW data_directory')/postmaster.pid"
  pid="$(head -n1 "$pidfile" 2>/dev/null || true)"
  gid="$(getent group ssl-cert | cut -d: -f3)"
  [ -n "$pid" ] && [ -n "$gid" ] &&
    awk '/^Groups:/{for(i=2;i<=NF;i++) print $i}' "/proc/$pid/status" 2>/dev/null | grep -qx "$gid"
}

ssl_works_soon() { # the reload is asynchronous: give it a few seconds
  local i
  for i in $(seq 1 15); do ssl_works && return 0; sleep 0.2; done
  return 1
}

psql_admin -c 'SELECT pg_reload_conf()' >/dev/null
if ! postmaster_can_read_key || ! ssl_works_soon; then
  log "restarting PostgreSQL $PG_VERSION/$PG_CLUSTER to turn TLS on"
  pgctl restart
  wait_ready
fi
if ! ssl_works; then
  PGCONNECT_TIMEOUT=5 psql "$URL" -XAtc 'SELECT 1' >&2 || true
  die "$ROLE cannot log in over TLS on $HOST:$PG_PORT (see /var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log)"
fi
[ "$(psql_admin -Atc 'SHOW password_encryption')" = scram-sha-256 ] || die "password_encryption is not scram-sha-256"

log "PostgreSQL on $HOST:$PG_PORT serves TLS; $ROLE logs in with SCRAM over TLS only"

echo "$URL"
