#!/usr/bin/env bash
# benches/ab.sh: A/B two Oasis builds (and nginx) on the same hot objects, alternating runs.
#
#   bash benches/ab.sh OLD_BIN NEW_BIN [--size BYTES] [--count N] [--connections C]
#                      [--duration-s S] [--rounds R] [--layout L] [--client-cores LIST]
#
# --client-cores LIST (taskset syntax): the load generator runs on those cores and the three
# servers on the others, one worker per server core (as in compare.sh).
#
# nginx's figures here read low (22-27 Gbit/s where nginx alone measured 32-38 on the same
# objects, with a client that spends 0.45 s of CPU per GB against 0.25-0.31 alone; cause not
# found, see BENCHMARKS.md): use them as a reference, not for Oasis/nginx claims, which come
# from compare.sh. Every copy of the objects is dropped from the page cache before the rounds,
# so each server reads its own copies in (`head -c` leaves nginx's copies in 4 KiB pages, an
# import 256 KiB folios, and sendfile's cost depends on the folios; docs/bench-log/2026-11-28-page-cache-folios-and-cold-fetch.md).
#
# Both builds import the same N objects of BYTES bytes into data dirs of their own and serve
# them at once on two loopback ports, with nginx (sendfile on, same worker count) on a third.
# Each round runs oasis-loadgen against nginx, OLD and NEW in turn (the order rotates every
# round), so drift on a shared box hits all three alike. Prints every run's Gbit/s, req/s and the
# server's CPU time per GB sent (user+system of all its threads and processes: steadier than
# throughput when the client shares the cores), the load generator's own CPU per GB received
# (a server that feeds the client in smaller pieces makes it work harder per byte) and, at the
# end, medians and median ratios. Everything started is stopped on exit. Build the two binaries
# first, e.g. with `git stash; cargo build --release -p oasis; cp target/release/oasis
# /tmp/oasis-old; git stash pop`.
set -euo pipefail
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 2 ]] || usage
OLD=$(realpath "$1") NEW=$(realpath "$2"); shift 2
SIZE=$((2 * 1024 * 1024)) COUNT=16 CONNS=100 DUR=8 ROUNDS=3 LAYOUT=combined CLIENT_CORES=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) SIZE=$2; shift ;;
    --count) COUNT=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --duration-s) DUR=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --layout) LAYOUT=$2; shift ;;
    --client-cores) CLIENT_CORES=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "ab.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/cores.sh
source "$ROOT/benches/cores.sh"
split_cores "$CLIENT_CORES" || usage
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LG="$TARGET/release/oasis-loadgen"
[[ -x $LG ]] || (cd "$ROOT" && cargo build --release -p oasis-loadgen)
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
for b in "$OLD" "$NEW"; do [[ -x $b ]] || { echo "ab.sh: $b is not an executable" >&2; exit 2; }; done

PORT_NGINX=27081 PORT_OLD=27082 PORT_NEW=27083
WORK=$(mktemp -d /tmp/oasis-ab.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/data/ab"
head -c "$SIZE" /dev/urandom >"$WORK/block"
for ((i = 0; i < COUNT; i++)); do
  f=$(printf '%s/data/ab/obj-%05d.bin' "$WORK" "$i")
  printf '%08d' "$i" | cat - "$WORK/block" | head -c "$SIZE" >"$f"
  printf '/media/ab/obj-%05d.bin\n' "$i" >>"$WORK/urls"
done

sync # settle the new files: no writeback under the measured runs
workers=$SERVER_CORE_N
case "$LAYOUT" in
  combined) ;;
  combined:*) workers=${LAYOUT#combined:} ;;
  *) workers=$(($(echo "$LAYOUT" | tr ',' '\n' | cut -d= -f2 | paste -sd+ -))) ;;
esac
# shellcheck source=benches/nginx_conf.sh
source "$ROOT/benches/nginx_conf.sh"
NGINX_CPU_AFFINITY=$NGINX_AFFINITY nginx_conf "$WORK/nginx" "$workers" "$PORT_NGINX" "$WORK/data"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"${SERVER_RUN[@]}" nginx -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/stderr.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/oasis.toml" <<EOF
[server]
access_log = "off"
[http]
keepalive_timeout_secs = 600
header_timeout_secs = 600
keepalive_requests_max = 1000000
EOF
start_oasis() { # name bin port
  "$2" import "$WORK/data" --data-dir "$WORK/$1-data" >"$WORK/$1-import.log" 2>&1 \
    || { echo "ab.sh: $1 import failed: $(tail -n 2 "$WORK/$1-import.log")" >&2; exit 1; }
  "${SERVER_RUN[@]}" "$2" serve --config "$WORK/oasis.toml" --data-dir "$WORK/$1-data" --listen "127.0.0.1:$3" \
    --layout "$LAYOUT" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}
start_oasis old "$OLD" "$PORT_OLD"
start_oasis new "$NEW" "$PORT_NEW"
# Each copy of the objects is dropped from the page cache, however it was written: each server
# reads its own in (see settle_hot_pages in compare.sh).
python3 - "$WORK/data/ab" "$WORK/old-data/objects" "$WORK/new-data/objects" <<'EOF'
import os, sys
for top in sys.argv[1:]:
    for root, _, names in os.walk(top):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
EOF
for port in "$PORT_NGINX" "$PORT_OLD" "$PORT_NEW"; do
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/media/ab/obj-00000.bin" && break
    sleep 0.1
  done
  curl -fs -o /dev/null "http://127.0.0.1:$port/media/ab/obj-00000.bin" \
    || { echo "ab.sh: nothing serves on port $port; logs:" >&2; tail -n 3 "$WORK"/*.log "$WORK"/nginx/*.log >&2; exit 1; }
done

declare -A PORT=([nginx]=$PORT_NGINX [old]=$PORT_OLD [new]=$PORT_NEW)
declare -A PID=([nginx]=${PIDS[0]} [old]=${PIDS[1]} [new]=${PIDS[2]})
HZ=$(getconf CLK_TCK)
order=(nginx old new)
# Warm-up, not recorded: each server serves every object for a while first, so page-cache
# (LRU) state, descriptor caches and pipe pools are settled before round 1.
for s in nginx old new; do
  "${CLIENT_RUN[@]}" "$LG" get --url-file "$WORK/urls" --base "http://127.0.0.1:${PORT[$s]}" \
    --connections "$CONNS" --duration-s 2 --out /dev/null
done
echo "size=$SIZE count=$COUNT connections=$CONNS duration_s=$DUR rounds=$ROUNDS layout=$LAYOUT client_cores=${CLIENT_CORES:-shared}"
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${order[@]}"; do
    before=$(cpu_ticks "${PID[$s]}")
    "${CLIENT_RUN[@]}" "$LG" get --url-file "$WORK/urls" --base "http://127.0.0.1:${PORT[$s]}" \
      --connections "$CONNS" --duration-s "$DUR" --label "$s" --out "$WORK/r$r-$s.json"
    after=$(cpu_ticks "${PID[$s]}")
    python3 - "$WORK/r$r-$s.json" "$r" "$s" "$((after - before))" "$HZ" <<'EOF'
import json, sys
path, r, s, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
j = json.load(open(path))
gb = j["bytes_received"] / 1e9
j["server_cpu_s"] = ticks / hz
j["server_cpu_s_per_gb"] = j["server_cpu_s"] / gb if gb else None
json.dump(j, open(path, "w"))
print(f"round {r} {s:>5}: {j['gbit_per_s']:7.2f} Gbit/s {j['requests_per_s']:9.0f} req/s"
      f"  server CPU {j['server_cpu_s']:5.2f} s = {j['server_cpu_s_per_gb'] or 0:.3f} s/GB"
      f"  client {j.get('client_cpu_s_per_gb') or 0:.3f} s/GB"
      f"  errors {j['errors_total'] + j['responses_non2xx']}")
EOF
  done
  order=("${order[@]:1}" "${order[0]}")
done
python3 - "$WORK" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
runs = {s: [json.load(open(f"{work}/r{r}-{s}.json")) for r in range(1, rounds + 1)] for s in ("nginx", "old", "new")}
for key, unit in (("gbit_per_s", "Gbit/s"), ("server_cpu_s_per_gb", "server CPU s/GB"),
                  ("client_cpu_s_per_gb", "client CPU s/GB")):
    g = {s: [j[key] or 0.0 for j in v] for s, v in runs.items()}
    med = {s: statistics.median(v) for s, v in g.items()}
    ratio = lambda a, b: statistics.median(x / y if y else 0.0 for x, y in zip(g[a], g[b]))
    print(f"median {unit}: " + "  ".join(f"{s} {m:.3f}" for s, m in med.items())
          + f"  | per-round ratios new/old {ratio('new', 'old'):.3f}"
          + f"  new/nginx {ratio('new', 'nginx'):.3f}  old/nginx {ratio('old', 'nginx'):.3f}")
EOF
