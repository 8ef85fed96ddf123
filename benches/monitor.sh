#!/usr/bin/env bash
# benches/monitor.sh: what the monitor costs per node (CPU and memory).
#
#   bash benches/monitor.sh [NODES] [SECONDS]      # default 2000 nodes, 20 s
#
# Starts a release `oasis monitor` (signed datagrams only, --nodes-max large enough) on loopback
# and monitor/examples/status_flood.rs, which sends NODES distinct nodes' real statuses (the
# crate's encoder, HMAC-signed) once a second each, spread over the second. Reads the monitor's
# CPU time (utime+stime from /proc/PID/stat) when the sender starts and when it ends, and
# prints: percent of one core, microseconds of monitor CPU per datagram taken, the monitor's RSS
# (VmRSS, and its peak VmHWM) with every node in the table, and the datagram counts from
# /api/nodes (with the datagrams the kernel dropped for a full socket buffer, `lost_in_kernel`).
# Also times one GET /metrics of the whole fleet. Ports: MON_UDP (17470), MON_HTTP
# (17471). OASIS_BIN runs that `oasis` instead of this tree's (an A/B against another build).
# Note the machine's load (uptime) beside the numbers: the sender shares the machine.
set -euo pipefail
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ ${1:-} == -h || ${1:-} == --help ]] && usage 0
NODES=${1:-2000}
SECONDS_RUN=${2:-20}
[[ $NODES =~ ^[1-9][0-9]*$ && $SECONDS_RUN =~ ^[1-9][0-9]*$ ]] || usage
UDP=127.0.0.1:${MON_UDP:-17470}
HTTP=127.0.0.1:${MON_HTTP:-17471}
KEY=bench-key-0123456789abcdef
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
cargo build -q --release --bin oasis
cargo build -q --release -p oasis-monitor --example status_flood
echo "== monitor cost: $NODES nodes x 1 datagram/s for $SECONDS_RUN s, commit $(git rev-parse --short HEAD), $(date -u +%F)${OASIS_BIN:+, monitor binary $OASIS_BIN}"
echo "== load: $(uptime)"
"${OASIS_BIN:-$TARGET/release/oasis}" monitor --udp "$UDP" --http "$HTTP" --key "$KEY" \
  --nodes-max $((NODES + 16)) 2>/dev/null &
MON=$!
trap 'kill $MON 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$HTTP/api/nodes?limit=0" >/dev/null && break; sleep 0.1; done
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$MON/stat"; }
taken() { curl -sf "http://$HTTP/api/nodes?limit=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["datagrams"]["accepted"])'; }
C0=$(cpu); A0=$(taken); T0=$(date +%s.%N)
"$TARGET/release/examples/status_flood" "$UDP" "$NODES" "$SECONDS_RUN" "$KEY"
C1=$(cpu); T1=$(date +%s.%N); A1=$(taken)
curl -sf "http://$HTTP/api/nodes?limit=0" | python3 -c '
import json,sys; j=json.load(sys.stdin); print("nodes in table:", j["total"], " datagrams:", json.dumps(j["datagrams"]), " lost in the kernel:", j.get("lost_in_kernel", "not reported"))'
M=$( { /usr/bin/time -f %e curl -sf -o /tmp/oasis-monitor-metrics.$$ "http://$HTTP/metrics"; } 2>&1 )
echo "GET /metrics: $(wc -c < /tmp/oasis-monitor-metrics.$$) bytes in ${M} s"; rm -f /tmp/oasis-monitor-metrics.$$
RSS=$(awk '/VmRSS/{print $2}' "/proc/$MON/status"); HWM=$(awk '/VmHWM/{print $2}' "/proc/$MON/status")
python3 - "$C0" "$C1" "$TICK" "$T0" "$T1" "$A0" "$A1" "$RSS" "$HWM" "$NODES" <<'PY'
import sys
c0, c1, tick, t0, t1, a0, a1, rss, hwm, nodes = map(float, sys.argv[1:])
cpu_s = (c1 - c0) / tick
wall = t1 - t0
n = a1 - a0
print(f"monitor CPU: {cpu_s:.2f} s over {wall:.1f} s = {100 * cpu_s / wall:.2f} % of one core; "
      f"{n:.0f} datagrams taken ({n / wall:.0f}/s), {1e6 * cpu_s / max(n, 1):.1f} us CPU each")
print(f"monitor RSS: {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB), {rss * 1024 / nodes / 1024:.1f} KiB per node")
PY
