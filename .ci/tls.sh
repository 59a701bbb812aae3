#!/usr/bin/env bash
# Start a private PostgreSQL serving TLS (a self-signed certificate) on 127.0.0.1 and a free
# port, with a SCRAM-password role that may only log in over TLS:
#
#   role persistence_tls   LOGIN CREATEDB, password $TLS_PASSWORD (default: a random one)
#   pg_hba                 hostssl   all persistence_tls 127.0.0.1/32, ::1/128  scram-sha-256
#                          hostnossl all persistence_tls 127.0.0.1/32, ::1/128  reject
#   password_encryption    scram-sha-256
#
#   usage: .ci/tls.sh [DATA_DIR]    DATA_DIR defaults to a new temporary folder
#   stop:  .venv/bin/python -m tests.servers stop DATA_DIR
#
# It touches no other server. The server (`python -m tests.servers`, on a PostgreSQL build
# with TLS: the embedded wheel's has none, Debian's has) stops when the process
# $PERSISTENCE_OWNER_PID (default: the caller, see lib.sh) exits, even if killed. Everything
# goes to stderr except the last line on stdout: the role's URL, with
# sslmode=require&channel_binding=require.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
ROLE=persistence_tls
# shellcheck source=lib.sh
source .ci/lib.sh
OWNER="$(owner_pid)"

log() { printf 'tls.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Random by default, with characters a URL must encode; passed by environment, never argv.
export PERSISTENCE_TLS_PASSWORD="${TLS_PASSWORD:-tls-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(8))')-p@ss/w:rd}"

data_dir=()
[ -n "${1:-}" ] && data_dir=(--data-dir "$1")
hba=()
for net in 127.0.0.1/32 ::1/128; do
  hba+=(--hba "hostssl all $ROLE $net scram-sha-256" --hba "hostnossl all $ROLE $net reject")
done

URL="$("$PYTHON" -m tests.servers start --owner "$OWNER" "${data_dir[@]}" --ssl \
  -c password_encryption=scram-sha-256 "${hba[@]}" \
  --role "$ROLE" --attribute CREATEDB --password-env PERSISTENCE_TLS_PASSWORD \
  --query sslmode=require --query channel_binding=require | tail -n 1)"

# Prove what the TLS run relies on: TLS with SCRAM works, and without TLS the role is refused.
TLS_URL="$URL" "$PYTHON" - <<'EOF' || die "the TLS server does not behave as it should"
import os

import psycopg

url = os.environ["TLS_URL"]
with psycopg.connect(url) as connection:
    assert connection.pgconn.ssl_in_use, "not over TLS"
    shown = connection.execute("SHOW password_encryption").fetchone()
    assert shown == ("scram-sha-256",), shown
plain = url.replace("sslmode=require&channel_binding=require", "sslmode=disable")
try:
    psycopg.connect(plain).close()
except psycopg.OperationalError:
    pass
else:
    raise AssertionError("the role logged in without TLS")
EOF
log "PostgreSQL serves TLS; $ROLE logs in with SCRAM over TLS only"

echo "$URL"
