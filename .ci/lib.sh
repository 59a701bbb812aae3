# Helpers sourced by the CI scripts (bash).

# started PID: the start time of a running process (not a zombie); fails when there is none.
# Kept with a pid, it tells the process from a later one given the same pid.
started() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  set -- ${stat##*) } # the fields after the command name, from the state (field 3) on
  [ "$1" != Z ] && [ "$1" != X ] && printf '%s\n' "${20}"
}

# owner_pid: whose exit stops what the calling script starts: $PERSISTENCE_OWNER_PID, else
# the process that ran the script. A forked subshell (`URL=$(.ci/x.sh 2>log)`) exits at once:
# it stands for the shell it was forked from (same command line), which runs on.
owner_pid() {
  if [ -n "${PERSISTENCE_OWNER_PID:-}" ]; then
    printf '%s\n' "$PERSISTENCE_OWNER_PID"
    return
  fi
  local pid=$PPID stat parent
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || { printf '%s\n' "$pid"; return; }
  set -- ${stat##*) }
  parent=$2
  if [ "$parent" -gt 1 ] && cmp -s "/proc/$pid/cmdline" "/proc/$parent/cmdline"; then
    pid=$parent
  fi
  printf '%s\n' "$pid"
}
