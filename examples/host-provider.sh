#!/bin/sh
# An example host provider for `flotilla server --host-group name=NAME,provider=command,command=THIS,...`.
#
# Flotilla calls it as
#   host-provider.sh launch    < host.json
#   host-provider.sh terminate < host.json
# where host.json describes one host:
#   {"hostId": "web-0000000000000004", "group": "web", "cluster": "default",
#    "capacityProvider": "web-cp", "endpoint": "http://127.0.0.1:8440", "region": "us-east-1",
#    "cpuUnits": 2048, "memoryMib": 4096,
#    "agentProgram": "/usr/local/bin/flotilla",
#    "agentArgs": ["agent", "--endpoint", "...", "--cluster", "...", "--region", "...",
#                  "--capacity-provider", "...", "--attribute", "flotilla.host-id=..."]}
#
# The contract:
# - exit 0 when done, anything else (with a message on stderr) when not;
#   Flotilla calls again on its next pass;
# - both actions are idempotent per hostId: Flotilla repeats a call it could
#   not confirm (after a crash, say), so launching a host that already runs,
#   or terminating one already gone, must succeed without doing it twice;
# - the launched host runs `flotilla agent` with agentArgs (they join it to
#   the cluster and capacity provider and name the host); it registers by
#   itself, so `launch` may return as soon as the host is starting.
#
# This example starts each host as an agent process on this machine, with
# one simulated instance of the host's size (set FLOTILLA_HOST_REAL=1 for a
# real agent sharing this machine's Docker engine: then run one host at a
# time, as they share the task metadata port). A cloud's version would call
# its CLI instead, e.g. run an instance whose user data starts the agent
# with the same arguments, and tag it with hostId to find it again.
# Needs jq.
set -eu

action=${1:?usage: host-provider.sh launch|terminate < host.json}
state_dir=${FLOTILLA_HOSTS_DIR:-/tmp/flotilla-hosts}
mkdir -p "$state_dir"
host=$(cat)
host_id=$(printf '%s' "$host" | jq -er .hostId)
case $host_id in
  *[!A-Za-z0-9._-]*) echo "unexpected hostId $host_id" >&2; exit 1 ;;
esac
pid_file=$state_dir/$host_id.pid

running() {
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

case $action in
  launch)
    if running; then
      exit 0
    fi
    program=$(printf '%s' "$host" | jq -er .agentProgram)
    # agentArgs, one per line (none contains a newline).
    set --
    while IFS= read -r arg; do set -- "$@" "$arg"; done <<ARGS
$(printf '%s' "$host" | jq -r '.agentArgs[]')
ARGS
    set -- "$@" --data-dir "$state_dir/$host_id"
    if [ "${FLOTILLA_HOST_REAL:-0}" != 1 ]; then
      set -- "$@" --simulate 1 \
        --simulate-cpu "$(printf '%s' "$host" | jq -er .cpuUnits)" \
        --simulate-memory "$(printf '%s' "$host" | jq -er .memoryMib)"
    fi
    nohup "$program" "$@" >"$state_dir/$host_id.log" 2>&1 &
    echo $! >"$pid_file"
    ;;
  terminate)
    if running; then
      kill "$(cat "$pid_file")"
    fi
    rm -f "$pid_file"
    ;;
  *)
    echo "unknown action $action: expected launch or terminate" >&2
    exit 2
    ;;
esac
