#!/usr/bin/env bash
# benches/pool.sh: Oasis pool benchmarks in a network this script builds, in one command.
#
#   bash benches/pool.sh                 # one repetition (a few minutes)
#   bash benches/pool.sh --repeat 3      # each measurement 3 times: medians with min-max
#   bash benches/pool.sh --quick         # seconds-long smoke run (small objects, 2 s loads)
#   bash benches/pool.sh --rate-mbit 500 --duration-s 20 --connections 8
#
# The network: network namespaces made here and only here (names opb<PID>-*), joined by veth
# pairs to a bridge in a switch namespace of their own; nothing is added to the host's
# namespace. Addresses are 10.213.0.0/24 inside those namespaces: PostgreSQL 10.213.0.2, the
# client 10.213.0.3, node i 10.213.0.1i. Each node's link is limited in both directions by
# `tc tbf` to --rate-mbit (default 1000): on the node's end (what it sends) and on the switch's
# end (what it receives), like a full-duplex NIC. The client's and PostgreSQL's links are not
# limited. One PostgreSQL (Debian's postgresql package, a throw-away cluster made by initdb in
# a temp directory, stopped on exit) holds the catalog; the nodes are release `oasis serve`.
#
# (1) Aggregate GET throughput of 1, 2 and 3 nodes: a pool of 3 nodes, replicas = 1, node i
#     holds obj-i (--object-mb); one wrk per loaded node in the client namespace fetches that
#     node's own object over --connections keep-alive connections for --duration-s; 1, 2 or 3
#     nodes loaded at once (1,2,3 in odd repetitions, 3,2,1 in even ones). Reported: Gbit/s of
#     response bytes and, per repetition, aggregate(N) / (N x aggregate(1)).
# (2) Proxy against direct, same pool: node 3 runs mode = "proxy" and holds no copy of obj-1.
#     Direct: client -> node 1 (the holder). Proxy: client -> node 3 -> node 1. Alternating
#     order per repetition. Reported: both rates, proxy/direct, and the CPU time of all three
#     node processes (utime + stime from /proc/PID/stat) per GB delivered, and the difference.
#     Then a 64-byte object held by node 1 only, fetched from node 1 (200) and from node 2 (307 to
#     node 1, not followed), one wrk of --connections each: requests/s and wrk's mean latency,
#     the per-request cost of a redirect (catalog query, decision, 307) against a small hit.
# (3) Replication repair: a new pool of 3 nodes (replicas = 2, down_after_ms = --down-after-ms)
#     on a new database; --repl-objects objects of --repl-mb MiB uploaded to node 1 and copied;
#     then kill -9 node 1 and poll node 2's GET /api/pool every 0.2 s: the time until
#     under_replicated first shows the loss (detection, about down_after_ms) and until it is
#     back to 0 (every lost copy made again on the survivors), and that repair time per GB.
#     The catalog's pool_replicas rows of the survivors are counted at the end.
#
# Needs root (namespaces, tc), ip, tc, wrk, curl, python3 and PostgreSQL server binaries under
# /usr/lib/postgresql/*/bin; builds `oasis` in release. Output: bench-results/pool-<ts>/
# {raw/results.tsv, raw/*.txt, summary.md, log.txt}. Everything made is removed on exit
# (processes, namespaces, the cluster, the temp directory). See BENCHMARKS.md ("Pools").
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARGS="$*"
REPEAT=1
QUICK=0
RATE_MBIT=1000
DURATION_S=""
CONNECTIONS=8
OBJECT_MB=""
REPL_OBJECTS=""
REPL_MB=""
DOWN_AFTER_MS=3000

usage() { sed -n '2,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --repeat) REPEAT="$2"; shift ;;
    --quick) QUICK=1 ;;
    --rate-mbit) RATE_MBIT="$2"; shift ;;
    --duration-s) DURATION_S="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --object-mb) OBJECT_MB="$2"; shift ;;
    --repl-objects) REPL_OBJECTS="$2"; shift ;;
    --repl-mb) REPL_MB="$2"; shift ;;
    --down-after-ms) DOWN_AFTER_MS="$2"; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done
for v in REPEAT RATE_MBIT CONNECTIONS DOWN_AFTER_MS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v wants a positive integer, got: ${!v}" >&2; exit 2; }
done
if [[ $QUICK == 1 ]]; then
  : "${DURATION_S:=2}" "${OBJECT_MB:=8}" "${REPL_OBJECTS:=4}" "${REPL_MB:=16}"
  [[ $REPEAT == 1 ]] || echo "--quick: ignoring --repeat $REPEAT (one repetition)" >&2
  REPEAT=1
else
  : "${DURATION_S:=15}" "${OBJECT_MB:=64}" "${REPL_OBJECTS:=16}" "${REPL_MB:=64}"
fi

[[ $(id -u) == 0 ]] || { echo "benches/pool.sh needs root (network namespaces, tc)" >&2; exit 2; }
for tool in ip tc wrk curl python3 runuser; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install -y iproute2 wrk curl python3)" >&2; exit 2; }
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x $PGBIN/initdb ]] || { echo "no PostgreSQL server under /usr/lib/postgresql/*/bin: apt-get install -y postgresql" >&2; exit 2; }

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench-results/pool-$TS"
mkdir -p "$OUT/raw"
LOG="$OUT/log.txt"
RESULTS="$OUT/raw/results.tsv"
note() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

echo "building oasis (release)" | tee -a "$LOG"
(cd "$ROOT" && cargo build --release --bin oasis) >>"$LOG" 2>&1 || { echo "release build failed: see $LOG" >&2; exit 1; }
WORK=$(mktemp -d /tmp/oasis-poolbench-XXXXXX)
chmod 755 "$WORK"
# A copy: a shared CARGO_TARGET_DIR may be rebuilt from another tree during the run.
OASIS="$WORK/oasis"
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/oasis" "$OASIS" || exit 1
PFX="opb$$"
SW="$PFX-sw"
NS_DB="$PFX-db"
NS_CL="$PFX-cl"
NET=10.213.0
DB_IP=$NET.2
CL_IP=$NET.3
TOKEN="pool-bench-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
LINK_KEY="pool-bench-key-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
CLK_TCK=$(getconf CLK_TCK)
NAMESPACES=()
declare -A NODE_PID=()
PG_STARTED=0

cleanup() {
  local pid
  for pid in "${NODE_PID[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for pid in "${NODE_PID[@]}"; do wait "$pid" 2>/dev/null; done
  if [[ $PG_STARTED == 1 ]]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >>"$LOG" 2>&1
  fi
  local ns
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node_ip() { echo "$NET.1$1"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
client() { in_ns "$NS_CL" "$@"; }

# Bytes of token bucket: 5 ms at the rate, at least 128 KiB (veth hands tbf 64 KiB GSO packets).
BURST=$((RATE_MBIT * 1000000 / 8 / 200))
((BURST < 131072)) && BURST=131072

# Adds namespace NAME at ADDR on the bridge; LIMIT=1 rate-limits both directions of its link.
attach() {
  local name=$1 addr=$2 limit=$3
  local ns="$PFX-$1"
  ip netns add "$ns" && NAMESPACES+=("$ns") || return 1
  ip -n "$SW" link add "v-$name" type veth peer name eth0 netns "$ns" || return 1
  ip -n "$SW" link set "v-$name" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  if [[ $limit == 1 ]]; then
    tc -n "$ns" qdisc add dev eth0 root tbf rate "${RATE_MBIT}mbit" burst "$BURST" latency 20ms || return 1
    tc -n "$SW" qdisc add dev "v-$name" root tbf rate "${RATE_MBIT}mbit" burst "$BURST" latency 20ms || return 1
  fi
}

make_network() {
  ip netns add "$SW" && NAMESPACES+=("$SW") || return 1
  ip -n "$SW" link set lo up
  ip -n "$SW" link add br0 type bridge || return 1
  ip -n "$SW" link set br0 up
  attach db "$DB_IP" 0 || return 1
  attach cl "$CL_IP" 0 || return 1
  local i
  for i in 1 2 3; do attach "n$i" "$(node_ip "$i")" 1 || return 1; done
}

start_pg() {
  mkdir -p "$WORK/pg" && chown postgres:postgres "$WORK/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres -A trust -E UTF8 --no-instructions >>"$LOG" 2>&1 || return 1
  echo "host all all $NET.0/24 trust" >>"$WORK/pg/data/pg_hba.conf"
  in_ns "$NS_DB" runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" \
    -o "-c listen_addresses=$DB_IP -p 5432 -k $WORK/pg -c fsync=on" -w -t 60 start >>"$LOG" 2>&1 || return 1
  PG_STARTED=1
}
psql_db() { in_ns "$NS_DB" "$PGBIN/psql" -h "$DB_IP" -U postgres -AtqX "$@"; }
new_database() { psql_db -d postgres -c "CREATE DATABASE $1" >>"$LOG" 2>&1 && echo "postgres://postgres@$DB_IP:5432/$1"; }

# start_node I CATALOG_URL REPLICAS MODE
start_node() {
  local i=$1 url=$2 replicas=$3 mode=$4
  local dir="$WORK/n$i"
  mkdir -p "$dir/data"
  cat >"$dir/oasis.toml" <<EOF
# Generated by benches/pool.sh
[server]
data_dir = "$dir/data"
access_log = "off"
drain_timeout_secs = 2
[[listen]]
addr = "$(node_ip "$i"):8080"
bandwidth_bps = 100000000000
[http]
keepalive_timeout_secs = 600
keepalive_requests_max = 1000000
[links]
keys = ["$LINK_KEY"]
[pool]
catalog = "$url"
node_id = "node-$i"
advertise = "http://$(node_ip "$i"):8080"
replicas = $replicas
down_after_ms = $DOWN_AFTER_MS
mode = "$mode"
EOF
  OASIS_API_TOKEN=$TOKEN ip netns exec "$PFX-n$i" "$OASIS" serve --config "$dir/oasis.toml" >"$OUT/raw/node$i.log" 2>&1 &
  NODE_PID[$i]=$!
  local _
  for _ in $(seq 150); do
    kill -0 "${NODE_PID[$i]}" 2>/dev/null || { note "node $i exited at start: $(tail -n 3 "$OUT/raw/node$i.log")"; return 1; }
    [[ $(client curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$(node_ip "$i"):8080/api/pool") == 200 ]] && return 0
    sleep 0.2
  done
  note "node $i did not answer /api/pool"; return 1
}
stop_nodes() {
  local i
  for i in "${!NODE_PID[@]}"; do kill -9 "${NODE_PID[$i]}" 2>/dev/null; wait "${NODE_PID[$i]}" 2>/dev/null; unset "NODE_PID[$i]"; done
}
pool_json() { client curl -s -m 5 -H "Authorization: Bearer $TOKEN" "http://$(node_ip "$1"):8080/api/pool"; }
wait_live() { # NODE COUNT
  local _
  for _ in $(seq 300); do
    [[ $(pool_json "$1" | grep -o '"state":"live"' | wc -l) == "$2" ]] && return 0
    sleep 0.2
  done
  note "node $1 never saw $2 live nodes"; return 1
}
under_replicated() { pool_json "$1" | grep -o '"under_replicated":[0-9]*' | cut -d: -f2; }
upload() { # NODE NAME FILE
  local code
  code=$(client curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -T "$3" "http://$(node_ip "$1"):8080/media/$2")
  [[ $code == 201 || $code == 200 || $code == 204 ]] || { note "upload of $2 to node $1: HTTP $code"; return 1; }
}
cpu_ticks() { # total utime+stime of the node processes
  local i t=0 s
  for i in "${!NODE_PID[@]}"; do
    s=$(awk '{print $14 + $15}' "/proc/${NODE_PID[$i]}/stat" 2>/dev/null) || s=0
    t=$((t + s))
  done
  echo "$t"
}
record() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$RESULTS"; }

cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT bytes=%d duration_us=%d requests=%d errors=%d mean_us=%.1f\n",
    summary.bytes, summary.duration, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, latency.mean))
end
EOF

# load LABEL URL... : one wrk per URL at once from the client namespace; prints
# "GBPS ERRORS REQUESTS_PER_S MEAN_LATENCY_US" (bytes and requests summed over the wrk processes,
# the mean latency weighted by requests).
load() {
  local label=$1; shift
  local k=0 url pids=()
  for url in "$@"; do
    k=$((k + 1))
    client wrk -t1 -c"$CONNECTIONS" -d"${DURATION_S}s" --timeout 10s -s "$WORK/report.lua" "$url" \
      >"$OUT/raw/$label.$k.txt" 2>&1 &
    pids+=("$!")
  done
  wait "${pids[@]}"
  python3 - "$OUT/raw/$label" "$k" <<'EOF'
import re, sys
base, n = sys.argv[1], int(sys.argv[2])
total, dur, errors, reqs, lat = 0, 0, 0, 0, 0.0
for k in range(1, n + 1):
    text = open(f"{base}.{k}.txt").read()
    m = re.search(r"RESULT bytes=(\d+) duration_us=(\d+) requests=(\d+) errors=(\d+) mean_us=([\d.]+)", text)
    if not m:
        print("0 1 0 0"); sys.exit()
    total += int(m[1]); dur = max(dur, int(m[2])); errors += int(m[4])
    reqs += int(m[3]); lat += float(m[5]) * int(m[3])
print(f"{total * 8 / dur / 1000:.4f} {errors} {reqs * 1e6 / dur:.1f} {lat / max(reqs, 1):.1f}")
EOF
}

throughput_phase() {
  note "throughput: 3 nodes (replicas 1; node 3 in proxy mode), ${RATE_MBIT} Mbit/s links, ${OBJECT_MB} MiB objects, $CONNECTIONS connections per loaded node, ${DURATION_S} s runs"
  local url i
  url=$(new_database pool_tput) || { note "cannot create the database"; return 1; }
  start_node 1 "$url" 1 redirect && start_node 2 "$url" 1 redirect && start_node 3 "$url" 1 proxy || return 1
  wait_live 3 3 || return 1
  head -c "$((OBJECT_MB * 1048576))" /dev/urandom >"$WORK/obj.bin"
  for i in 1 2 3; do upload "$i" "obj-$i.bin" "$WORK/obj.bin" || return 1; done
  rm -f "$WORK/obj.bin"
  # Warm: each object read once where it is served from, through the proxy too.
  for i in 1 2 3; do client curl -s -o /dev/null "http://$(node_ip "$i"):8080/media/obj-$i.bin"; done
  local proxied
  proxied=$(client curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://$(node_ip 3):8080/media/obj-1.bin")
  [[ $proxied == "200 $((OBJECT_MB * 1048576))" ]] || { note "node 3 did not proxy obj-1 whole: $proxied"; return 1; }
  # Redirect: a 64-byte object on node 1 only (small enough that its 200s do not fill the link);
  # node 2 (redirect mode) answers 307 for it.
  head -c 64 /dev/urandom >"$WORK/tiny.bin"
  upload 1 tiny.bin "$WORK/tiny.bin" || return 1
  local redirected
  redirected=$(client curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://$(node_ip 2):8080/media/tiny.bin")
  [[ $redirected == "307 http://$(node_ip 1):8080/media/tiny.bin" ]] || { note "node 2 did not redirect tiny.bin to node 1: $redirected"; return 1; }
  local rep n order urls r before after gb gbps errs reqps lat
  for ((rep = 1; rep <= REPEAT; rep++)); do
    order="1 2 3"; ((rep % 2 == 0)) && order="3 2 1"
    for n in $order; do
      urls=()
      for ((i = 1; i <= n; i++)); do urls+=("http://$(node_ip "$i"):8080/media/obj-$i.bin"); done
      r=$(load "agg.r$rep.n$n" "${urls[@]}")
      read -r gbps errs _ _ <<<"$r"
      note "rep $rep: $n node(s) loaded: $gbps Gbit/s (errors $errs)"
      record agg "$rep" "$n" "$gbps" "$errs"
    done
    order="direct proxy"; ((rep % 2 == 0)) && order="proxy direct"
    for mode in $order; do
      local target=1
      [[ $mode == proxy ]] && target=3
      before=$(cpu_ticks)
      r=$(load "$mode.r$rep" "http://$(node_ip "$target"):8080/media/obj-1.bin")
      after=$(cpu_ticks)
      read -r gbps errs _ _ <<<"$r"
      gb=$(python3 -c "print($gbps * $DURATION_S / 8)")
      note "rep $rep: $mode: $gbps Gbit/s (errors $errs), node CPU $(((after - before)))/$CLK_TCK s for about $gb GB"
      record proxy "$rep" "$mode" "$gbps" "$errs" "$(python3 -c "print(($after - $before) / $CLK_TCK)")" "$gb"
    done
    order="holder redirect"; ((rep % 2 == 0)) && order="redirect holder"
    for mode in $order; do
      local target=1
      [[ $mode == redirect ]] && target=2
      r=$(load "$mode.r$rep" "http://$(node_ip "$target"):8080/media/tiny.bin")
      read -r gbps errs reqps lat <<<"$r"
      note "rep $rep: tiny.bin, $mode: $reqps requests/s, mean latency $lat us (errors $errs)"
      record redirect "$rep" "$mode" "$reqps" "$lat" "$errs"
    done
  done
  stop_nodes
}

replication_phase() {
  note "replication: 3 nodes (replicas 2, down_after_ms $DOWN_AFTER_MS), $REPL_OBJECTS objects x $REPL_MB MiB on node 1, kill -9 node 1"
  head -c "$((REPL_MB * 1048576))" /dev/urandom >"$WORK/repl.bin"
  local rep url i k t0 t now under t_down t_done rows gb
  for ((rep = 1; rep <= REPEAT; rep++)); do
    rm -rf "$WORK"/n[123]
    url=$(new_database "pool_repl_r$rep") || { note "cannot create the database"; return 1; }
    for i in 1 2 3; do start_node "$i" "$url" 2 redirect || return 1; done
    wait_live 1 3 || return 1
    for ((k = 1; k <= REPL_OBJECTS; k++)); do upload 1 "r-$k.bin" "$WORK/repl.bin" || return 1; done
    t=0
    # At least 2 rows a name: a repair round that runs while the first copies are still queued
    # can make a third copy of a name (seen 2026-12-06), which the pool keeps.
    until (($(psql_db -d "pool_repl_r$rep" -c "SELECT count(*) FROM pool_replicas" || echo 0) >= 2 * REPL_OBJECTS)) \
      && [[ $(under_replicated 1) == 0 ]]; do
      sleep 0.2; t=$((t + 1))
      ((t > 3000)) && { note "the copies never all arrived"; return 1; }
    done
    kill -9 "${NODE_PID[1]}"; t0=$(date +%s.%N)
    wait "${NODE_PID[1]}" 2>/dev/null; unset "NODE_PID[1]"
    t_down=""; t_done=""
    while :; do
      under=$(under_replicated 2)
      now=$(date +%s.%N)
      if [[ -z $t_down ]]; then
        [[ -n $under && $under != 0 ]] && t_down=$(python3 -c "print($now - $t0)")
      elif [[ $under == 0 ]]; then
        t_done=$(python3 -c "print($now - $t0)"); break
      fi
      (($(python3 -c "print(int($now - $t0 > 600))"))) && break
      sleep 0.2
    done
    rows=$(psql_db -d "pool_repl_r$rep" -c "SELECT count(*) FROM pool_replicas WHERE node_id <> 'node-1'")
    gb=$(python3 -c "print($REPL_OBJECTS * $REPL_MB * 1048576 / 1e9)")
    if [[ -z $t_done ]]; then
      note "rep $rep: the replica count was not restored within 600 s (detected: ${t_down:-never})"
      record repl "$rep" "$gb" "${t_down:-nan}" nan "$rows"
    else
      note "rep $rep: loss seen after ${t_down} s, restored after ${t_done} s; survivors' replica rows $rows (at least $((2 * REPL_OBJECTS)) wanted)"
      record repl "$rep" "$gb" "$t_down" "$t_done" "$rows"
    fi
    stop_nodes
  done
  rm -f "$WORK/repl.bin"
}

{
  echo "# bash benches/pool.sh $ARGS"
  echo "# rate_mbit=$RATE_MBIT duration_s=$DURATION_S connections=$CONNECTIONS object_mb=$OBJECT_MB repl_objects=$REPL_OBJECTS repl_mb=$REPL_MB down_after_ms=$DOWN_AFTER_MS repeat=$REPEAT quick=$QUICK"
} >"$RESULTS"
note "network namespaces $PFX-*, work directory $WORK"
make_network || { note "cannot build the network"; exit 1; }
start_pg || { note "cannot start PostgreSQL: $(tail -n 3 "$WORK/pg/server.log" 2>/dev/null)"; exit 1; }
status=0
throughput_phase || { note "throughput phase failed"; status=1; stop_nodes; }
replication_phase || { note "replication phase failed"; status=1; stop_nodes; }
python3 "$ROOT/benches/report_pool.py" "$RESULTS" >"$OUT/summary.md" || status=1
cat "$OUT/summary.md"
note "results in $OUT"
exit "$status"
