#!/usr/bin/env bash
# A fleet on one machine under a monitor: README's "Monitoring" walkthrough, run as written
# (tests/walkthrough.rs runs it too). From a checkout with `cargo build --release` done:
#
#   bash docs/walkthrough/fleet.sh              # FLEET_HOLD=1: keep it running until Ctrl-C
#
# Starts a monitor, a log server, two media servers shipping their logs to it, and an agent
# supervising one of them; waits until the dashboard shows all five nodes up; kills the
# unsupervised server with kill -9 (it turns stale) and the supervised one (the agent restarts
# it: it is back under a new pid); then stops everything. Ports: FLEET_PORT (7470) to +4.
set -euo pipefail
OASIS=${OASIS:-target/release/oasis}
PORT=${FLEET_PORT:-7470}
MON_UDP=127.0.0.1:$PORT MON_HTTP=127.0.0.1:$((PORT + 1))
MEDIA_A=127.0.0.1:$((PORT + 2)) MEDIA_B=127.0.0.1:$((PORT + 3)) LOGS=127.0.0.1:$((PORT + 4))
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$WORK"' EXIT

# Every process reports to the monitor every 200 ms (stale after three missed reports).
report() { printf '[monitor]\ntargets = ["%s"]\ninterval_ms = 200\nnode = "%s"\n' "$MON_UDP" "$1"; }
report logs > "$WORK/logs.toml"
for m in media-a media-b; do
  { report "$m"; printf '[log]\nship_to = ["%s"]\nnode = "%s"\n' "$LOGS" "$m"; } > "$WORK/$m.toml"
done
{ report agent; cat <<TOML
[[process]]
name = "media-a"
command = "$OASIS"
args = ["serve", "--listen", "$MEDIA_A", "--data-dir", "$WORK/media-a", "--config", "$WORK/media-a.toml"]
health_url = "http://$MEDIA_A/healthz"
TOML
} > "$WORK/agent.toml"

"$OASIS" monitor --udp "$MON_UDP" --http "$MON_HTTP" &> "$WORK/monitor.log" &
"$OASIS" logd --listen "$LOGS" --data-dir "$WORK/logs" --config "$WORK/logs.toml" &> "$WORK/logs.log" &
"$OASIS" serve --listen "$MEDIA_B" --data-dir "$WORK/media-b" --config "$WORK/media-b.toml" &> "$WORK/media-b.log" &
MEDIA_B_PID=$!
"$OASIS" agent --config "$WORK/agent.toml" &> "$WORK/agent.log" &
echo "dashboard: http://$MON_HTTP/"

# field NODE KEY: one field of one node as /api/nodes shows it (empty while not shown).
field() {
  curl -sf "http://$MON_HTTP/api/nodes?filter=$1" | python3 -c '
import json, sys
nodes = [n for n in json.load(sys.stdin)["nodes"] if n["node"] == sys.argv[1]]
print(nodes[0][sys.argv[2]] if nodes else "")' "$1" "$2" || true
}
# await WHAT COMMAND...: runs COMMAND every 100 ms until it succeeds, 30 s at most.
await() {
  local what=$1; shift
  for _ in $(seq 300); do
    if "$@"; then echo "ok: $what"; return; fi
    sleep 0.1
  done
  echo "gave up waiting: $what" >&2; exit 1
}
is() { [[ $(field "$1" "$2") == "$3" ]]; }
all_up() { for n in logs media-a media-b agent; do is "$n" state up || return 1; done; }

await "monitor, log server, both media servers and the agent up" all_up

kill -9 "$MEDIA_B_PID"
wait "$MEDIA_B_PID" 2> /dev/null || true
await "media-b (not supervised) stale" is media-b state stale

OLD_PID=$(field media-a pid)
kill -9 "$OLD_PID"
back() { is media-a state up && [[ $(field media-a pid) != "$OLD_PID" ]]; }
await "media-a back under a new pid (the agent restarted it)" back
echo "media-a restarts seen by the monitor: $(field media-a restarts_seen)"

if [[ -n ${FLEET_HOLD:-} ]]; then echo "holding; Ctrl-C stops the fleet"; wait; fi
