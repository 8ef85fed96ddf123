#!/usr/bin/env bash
# benches/profile.sh: where the CPU goes, Oasis and nginx side by side, under the same wrk load.
#
#   bash benches/profile.sh                  # 64 KiB objects, 100 connections, 8 s each
#   bash benches/profile.sh --size 2097152   # 2 MiB objects
#   bash benches/profile.sh --seconds 15 --connections 1000
#
# Builds oasis (release, with line tables), makes N objects of --size bytes, serves them from
# Oasis (combined layout, access log off) and nginx (sendfile on, 2 workers, access log off) on
# loopback ports 18090/18091 in turn, and records each server's threads with `perf record -g`
# while wrk cycles through the objects. Prints req/s and the top symbols of each server, and
# leaves perf.data files and reports under bench-results/profile-<UTC timestamp>/.
# Needs perf (Debian linux-perf) and wrk; installs them with apt when missing.
set -euo pipefail

SIZE=65536
SECONDS_EACH=8
CONNS=100
OBJECTS=50
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) SIZE="$2"; shift ;;
    --seconds) SECONDS_EACH="$2"; shift ;;
    --connections) CONNS="$2"; shift ;;
    --objects) OBJECTS="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/bench-results/profile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT/src"
OASIS_PORT=18090
NGINX_PORT=18091

need=()
command -v perf >/dev/null || need+=(linux-perf)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
if [[ ${#need[@]} -gt 0 ]]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

(cd "$ROOT" && cargo build --release -q -p oasis)
OASIS="${CARGO_TARGET_DIR:-$ROOT/target}/release/oasis"
[[ $OASIS == /* ]] || OASIS="$ROOT/$OASIS"

for i in $(seq 1 "$OBJECTS"); do head -c "$SIZE" /dev/urandom >"$OUT/src/o$i.bin"; done
"$OASIS" import "$OUT/src" --data-dir "$OUT/oasis-data" >"$OUT/import.log" 2>&1
cat >"$OUT/oasis.toml" <<EOF
[server]
data_dir = "$OUT/oasis-data"
access_log = "off"
[[listen]]
addr = "127.0.0.1:$OASIS_PORT"
EOF
mkdir -p "$OUT/nginx/logs" "$OUT/www/media"
cp "$OUT"/src/*.bin "$OUT/www/media/"
cat >"$OUT/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $OUT/nginx/tmp; proxy_temp_path $OUT/nginx/tmp;
  fastcgi_temp_path $OUT/nginx/tmp; uwsgi_temp_path $OUT/nginx/tmp; scgi_temp_path $OUT/nginx/tmp;
  server { listen 127.0.0.1:$NGINX_PORT; root $OUT/www; }
}
EOF
cat >"$OUT/urls.lua" <<EOF
local i = 0
request = function()
  i = (i % $OBJECTS) + 1
  return wrk.format("GET", "/media/o" .. i .. ".bin")
end
EOF

wait_port() {
  for _ in $(seq 1 200); do
    if curl -fs -o /dev/null "http://127.0.0.1:$1/media/o1.bin"; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not answer" >&2
  exit 1
}

# profile NAME PORT PID...: warm up, then wrk under perf record; prints req/s and top symbols.
profile() {
  local name=$1 port=$2
  shift 2
  local pids
  pids=$(IFS=,; echo "$*")
  wrk -t1 -c"$CONNS" -d2s -s "$OUT/urls.lua" "http://127.0.0.1:$port/" >/dev/null
  perf record -q -g -p "$pids" -o "$OUT/$name.perf.data" -- sleep "$SECONDS_EACH" \
    >"$OUT/$name.perf.log" 2>&1 &
  local rec=$!
  sleep 0.2
  wrk -t1 -c"$CONNS" -d"${SECONDS_EACH}s" -s "$OUT/urls.lua" "http://127.0.0.1:$port/" \
    >"$OUT/$name.wrk.txt"
  wait "$rec" || true
  perf report -i "$OUT/$name.perf.data" --no-children --sort dso,sym --stdio 2>/dev/null \
    >"$OUT/$name.report.txt" || true
  echo "== $name: $(grep 'Requests/sec' "$OUT/$name.wrk.txt")"
  grep -E '^ +[0-9]' "$OUT/$name.report.txt" | head -25 || true
}

"$OASIS" serve --config "$OUT/oasis.toml" >"$OUT/oasis.log" 2>&1 &
PIDS+=($!)
wait_port "$OASIS_PORT"
profile oasis "$OASIS_PORT" "${PIDS[-1]}"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx"
wait_port "$NGINX_PORT"
master=$(cat "$OUT/nginx/nginx.pid")
PIDS+=("$master")
mapfile -t workers < <(pgrep -P "$master")
profile nginx "$NGINX_PORT" "${workers[@]}"
nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" -s quit
echo "reports: $OUT/{oasis,nginx}.report.txt"
