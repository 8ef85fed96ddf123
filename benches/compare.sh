#!/usr/bin/env bash
# benches/compare.sh: reproduce every Oasis load figure side by side with nginx, in one command.
#
#   bash benches/compare.sh                      # full run (tens of minutes)
#   bash benches/compare.sh --quick              # seconds-long smoke test (CI)
#   bash benches/compare.sh --scenarios 1,2,7    # a subset
#   bash benches/compare.sh --layouts "combined f=1,nc=1,nd=1"   # core-layout sweep (1, 3, 4)
#   bash benches/compare.sh --scenarios 1,2 --repeat 3   # each run 3 times: ratios with their spread
#   bash benches/compare.sh --client-cores 0     # clients on core 0, both servers on the rest
#   bash benches/compare.sh --client-cores 0 --discard-body   # ... with a client that copies nothing
#   bash benches/compare.sh --scenarios 8 --repeat 3   # signed links against public reads (Oasis only)
#
#   bash benches/compare.sh --scenarios 5,9 --repeat 3   # viewer capacity and 2x overload
#
# --repeat N (default 1): scenarios 1-5 and 9 run N times, nginx first in odd repetitions and Oasis
# first in even ones, so drift on this shared box and the order hit both sides; raw files get a
# .rK suffix on the label
# (raw/LABEL.rK__SERVER.json) and summary.md gives per-server medians and the median and
# min-max of the per-repetition Oasis/nginx ratios. Scenario 8 repeats the same way with public
# and signed URLs in place of nginx and Oasis. Scenarios 6-7 run once. A repeat multiplies the
# time of scenarios 1-5, 8 and 9 by N (each extra cold repetition drops the page cache again).
#
# Scenario 5 (viewer capacity): HLS packages made by ffmpeg at 1, 4 and 8 Mbit/s (4 s segments,
# #EXTINF) that Oasis paces by itself (a burst of [pacing] initial_burst_secs, then bitrate x
# factor_segment) and nginx serves from the same files with limit_rate at that rate and
# limit_rate_after equal to Oasis's burst. oasis-loadgen's viewers fetch the playlist, then the
# segments in order, keep a buffer that drains in real time and stall when it runs dry; viewers
# are added step by step until one stalls. The limit in the same run: loopback (iperf3, run here
# unless scenario 7 ran) / bitrate, and the servers' descriptor limit. OASIS_LEAD_S=1 gives Oasis
# nginx's one second of lead (`[pacing] lead_secs`; Oasis's default is 0).
# Scenario 9 (overload): Oasis with bandwidth_bps = its measured capacity (viewers sustained at
# 4 Mbit/s in scenario 5 of this run, or OVERLOAD_SUSTAINED, x 4 Mbit/s), which admits C
# progressive viewers of a 4 Mbit/s MP4 (paced at 1.5x); 2C viewers offered to each server;
# admitted, refused (with Retry-After?) and stalled counted.
# --quick ignores --repeat (always 1 repetition) and runs scenario 8 at 1 s per run.
#
# Scenario 8 runs on Oasis alone: the same hot 2 MiB and 64 KiB objects through /media/ (public)
# and through /s/ links made by `oasis sign` (one HMAC-SHA256 per request), 100 connections.
# Each run's oasis.toml carries a fresh random [links] key; public reads never look at it.
# S8_CONTROL=1 makes the 'signed' runs read the public URLs too: public against public, the
# harness's own spread between the two sides of a pair (the notes in summary.md say so).
#
# --client-cores LIST (taskset syntax, default: none): the load generators (oasis-loadgen, wrk)
# run on these cores and both servers on the others, one worker per server core (nginx's
# worker_cpu_affinity and Oasis's pinning follow). Without it clients and servers share every
# core, and a server that leaves the client more CPU wins throughput through the client.
#
# --discard-body: oasis-loadgen drops response bodies in the kernel (recv MSG_TRUNC) instead of
# copying them out, so a run at 1000 connections measures the servers, not the client's copy
# (with --client-cores, a copying client's core is the limit there). wrk always copies.
#
# Installs nginx, wrk, fio, iperf3 and python3-matplotlib from apt when missing, builds the
# release binaries, makes a data set under bench-results/work/, starts nginx and Oasis on two
# loopback ports, runs the scenarios against each in turn and writes
# bench-results/<timestamp>/{raw/*.json, summary.md, *.png, log.txt}.
# Every load targets 127.0.0.1 and is bounded in time. Everything started is stopped on exit.
# See BENCHMARKS.md for what each scenario measures and why.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
SCENARIOS="1,2,3,4,5,6,7,8,9"
LAYOUTS="combined"
DURATION_S=""
S8_CONTROL="${S8_CONTROL:-0}"
REPEAT=1
NGINX_PORT=18080
OASIS_PORT=18081
IPERF_PORT=18082
# Viewer media (scenarios 5 and 9): bitrates, HLS segment length and count, Oasis's pacing.
VIEWER_RATES="1000000 4000000 8000000"
SEG_S=4
SEG_N=4
MOVIE_BPS=4000000
MOVIE_S=60
BURST_S=2
FACTOR_SEGMENT=4
FACTOR_PROGRESSIVE=1.5
# Oasis's bandwidth budget outside scenario 9: 1 Tbit/s, far above what loopback carries, so
# its admission never caps a capacity figure (nginx has none); scenario 9 sets its own. At the
# former 100 Gbit/s, scenario 5's 8 Mbit/s ramp ended on Oasis's bandwidth critical event (its
# viewers' holds at 95% of the budget; 2026-12-06), not on serving.
OASIS_BW=1000000000000
CLIENT_CORES=""
LG_EXTRA=()

usage() { sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --layouts) LAYOUTS="$2"; shift ;;
    --duration-s) DURATION_S="$2"; shift ;;
    --repeat) REPEAT="$2"; shift ;;
    --client-cores) CLIENT_CORES="$2"; shift ;;
    --discard-body) LG_EXTRA=(--discard-body) ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done

[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "--repeat wants a positive integer, got: $REPEAT" >&2; usage 2; }
# shellcheck source=benches/cores.sh
source "$ROOT/benches/cores.sh"
split_cores "$CLIENT_CORES" || usage 2
WRK_THREADS=2
[[ -n $CLIENT_CORES ]] && WRK_THREADS=$CLIENT_CORE_N
if [[ $QUICK == 1 ]]; then
  : "${DURATION_S:=2}"
  [[ $REPEAT == 1 ]] || echo "--quick: ignoring --repeat $REPEAT (one repetition)" >&2
  REPEAT=1
  SCENARIOS=$(echo "$SCENARIOS" | tr ',' '\n' | grep -v -x -e 3 -e 4 | paste -sd, -)
else
  : "${DURATION_S:=15}"
fi
has() { [[ ",$SCENARIOS," == *",$1,"* ]]; }
# Label suffix of each repetition of scenarios 1-4 and 8: none without --repeat, else .r1 .. .rN.
REPS=("")
if [[ $REPEAT != 1 ]]; then
  REPS=()
  for ((i = 1; i <= REPEAT; i++)); do REPS+=(".r$i"); done
fi

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench-results/$TS"
WORK="$ROOT/bench-results/work"
# The quick data set lives apart, so a smoke run never imports the big cold set into Oasis.
[[ $QUICK == 1 ]] && WORK="$ROOT/bench-results/work-quick"
RAW="$OUT/raw"
mkdir -p "$RAW" "$WORK"
LOG="$OUT/log.txt"
NOTES="$OUT/notes.txt"
: >"$NOTES"
log() { echo "[compare $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
note() { echo "$*" >>"$NOTES"; log "NOTE: $*"; }

# ---------------------------------------------------------------- cleanup
STARTED_PIDS=()
cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  [[ $(type -t restore_sysctls) == function ]] && restore_sysctls
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

forget_pid() { # drop a stopped pid from the cleanup list
  local keep=() p
  for p in "${STARTED_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- tools
need_apt=0
for bin in nginx wrk fio iperf3; do command -v "$bin" >/dev/null || need_apt=1; done
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || true)
[[ -n $PY ]] && "$PY" -c 'import matplotlib' 2>/dev/null || need_apt=1
if [[ $need_apt == 1 ]]; then
  log "installing nginx wrk fio iperf3 python3-matplotlib from apt"
  apt-get update -qq >>"$LOG" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk fio iperf3 python3-matplotlib >>"$LOG" 2>&1 \
    || note "apt-get install failed; continuing with what is present"
  PY=/usr/bin/python3
fi

log "building release binaries"
(cd "$ROOT" && cargo build --release -p oasis-loadgen) >>"$LOG" 2>&1 || { log "FATAL: oasis-loadgen did not build"; exit 1; }
OASIS_BUILT=1
(cd "$ROOT" && cargo build --release -p oasis) >>"$LOG" 2>&1 || { OASIS_BUILT=0; note "oasis did not build (see log.txt): Oasis columns are n/a"; }
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
LG="$TARGET/release/oasis-loadgen"
export RUST_BACKTRACE=0
OASIS="$TARGET/release/oasis"

# ---------------------------------------------------------------- machine
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
  echo "mem_total_kib: $(awk '/MemTotal/{print $2}' /proc/meminfo)"
  echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)"
  echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)"
  echo "quick: $QUICK duration_s: $DURATION_S scenarios: $SCENARIOS layouts: $LAYOUTS repeat: $REPEAT"
  echo "client_cores: ${CLIENT_CORES:-shared} server_cores: $(echo $SERVER_CORES | tr ' ' ,)"
  echo "loadgen_bodies: $([[ ${#LG_EXTRA[@]} -gt 0 ]] && echo discarded || echo copied)"
} >"$OUT/machine.txt"

# oasis-loadgen widens ip_local_port_range for 50k connections: reserve our listening ports so
# no client socket takes them, and put both settings back on exit.
PORT_RANGE_SAVED=$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
RESERVED_SAVED=$(cat /proc/sys/net/ipv4/ip_local_reserved_ports 2>/dev/null || true)
if echo "${RESERVED_SAVED:+$RESERVED_SAVED,}$NGINX_PORT-$((IPERF_PORT + 16))" \
  >/proc/sys/net/ipv4/ip_local_reserved_ports 2>/dev/null; then
  RESERVED_SET=1
else
  RESERVED_SET=0
  note "could not reserve ports $NGINX_PORT-$((IPERF_PORT + 16)) (ip_local_reserved_ports): a widened ephemeral range may collide with them"
fi
restore_sysctls() {
  [[ $RESERVED_SET == 1 ]] && echo "$RESERVED_SAVED" >/proc/sys/net/ipv4/ip_local_reserved_ports 2>/dev/null
  [[ -n $PORT_RANGE_SAVED ]] && echo "$PORT_RANGE_SAVED" >/proc/sys/net/ipv4/ip_local_port_range 2>/dev/null
  true
}

# Raise our own descriptor limit so servers started from here inherit it.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DROP_CACHES=0
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  DROP_CACHES=1
else
  note "page cache could NOT be dropped (/proc/sys/vm/drop_caches not writable): cold figures are only cold because the cold set exceeds free memory"
fi
drop_caches() { [[ $DROP_CACHES == 1 ]] && sync && echo 3 >/proc/sys/vm/drop_caches; true; }

# The kernel keeps TCP metrics per destination (ssthresh, RTT, reordering) from closed
# connections and starts new ones to the same address from them. After a ramp that drove
# loopback into memory pressure they start the next run's connections small: one Oasis run of
# whole 4 MiB segments stalled at 5,035 viewers after the 4 Mbit/s ramp and sustained 10,070
# with the metrics flushed (2026-12-06). Every load run starts from none, whoever ran before.
FLUSH_METRICS=0
if ip tcp_metrics flush all 2>/dev/null; then
  FLUSH_METRICS=1
else
  note "could not flush the kernel's TCP metrics (ip tcp_metrics flush all): a run may start from what the run before it left"
fi
flush_tcp_metrics() { [[ $FLUSH_METRICS == 1 ]] && ip tcp_metrics flush all 2>/dev/null; true; }

# ---------------------------------------------------------------- data set
DATA="$WORK/data"
mkdir -p "$DATA/hot" "$DATA/small" "$DATA/cold"
if [[ $QUICK == 1 ]]; then HOT_N=4; SMALL_N=16; else HOT_N=16; SMALL_N=256; fi
make_files() { # dir prefix count bytes
  local dir=$1 prefix=$2 n=$3 bytes=$4 i f
  local block="$WORK/block-$bytes"
  [[ -s $block ]] || head -c "$bytes" /dev/urandom >"$block"
  for ((i = 0; i < n; i++)); do
    f=$(printf '%s/%s-%05d.bin' "$dir" "$prefix" "$i")
    [[ -f $f && $(stat -c %s "$f") == "$bytes" ]] || { printf '%08d' "$i" | cat - "$block" | head -c "$bytes" >"$f"; }
  done
}
log "data set: $HOT_N hot 2 MiB, $SMALL_N small 64 KiB"
make_files "$DATA/hot" seg "$HOT_N" $((2 * 1024 * 1024))
make_files "$DATA/small" obj "$SMALL_N" $((64 * 1024))
COLD_N=0
if has 3 || has 4; then
  avail_kib=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
  disk_kib=$(df -Pk "$WORK" | awk 'NR==2{print $4}')
  if [[ $DROP_CACHES == 1 ]]; then
    # Caches are dropped before each cold run and a sweep reads each file at most once.
    cold_kib=$((8 * 1024 * 1024))
  else
    cold_kib=$((avail_kib * 5 / 4))
  fi
  cap_kib=$((32 * 1024 * 1024)); ((cold_kib > cap_kib)) && cold_kib=$cap_kib
  ((cold_kib > disk_kib / 4)) && cold_kib=$((disk_kib / 4))
  COLD_N=$((cold_kib / 2048))
  log "cold set: $COLD_N x 2 MiB = $((cold_kib / 1024)) MiB (MemAvailable $((avail_kib / 1024)) MiB, disk free $((disk_kib / 1024)) MiB)"
  make_files "$DATA/cold" seg "$COLD_N" $((2 * 1024 * 1024))
fi
echo "cold_files: $COLD_N drop_caches: $DROP_CACHES" >>"$OUT/machine.txt"

# Viewer media: made once per parameter set (a stamp records them), small (16 s per HLS rate).
VIEWERS="$DATA/viewers"
make_media() {
  local stamp="seg=$SEG_S x $SEG_N rates=$VIEWER_RATES movie=$MOVIE_BPS x $MOVIE_S" r kbps d
  [[ -d $VIEWERS && -f $WORK/viewers.stamp && $(cat "$WORK/viewers.stamp") == "$stamp" ]] && return 0
  command -v ffmpeg >/dev/null || {
    log "installing ffmpeg from apt"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >>"$LOG" 2>&1
  }
  rm -rf "$VIEWERS"; mkdir -p "$VIEWERS"
  # x264 with nal-hrd=cbr pads to the bitrate, so every segment carries it (size / #EXTINF).
  enc() { # bps seconds -> x264 arguments
    echo "-f lavfi -i testsrc2=size=640x360:rate=25 -t $2 -c:v libx264 -preset ultrafast -g $((25 * SEG_S)) -keyint_min $((25 * SEG_S)) -sc_threshold 0 -b:v $1 -minrate $1 -maxrate $1 -bufsize $(($1 / 2)) -x264-params nal-hrd=cbr"
  }
  for r in $VIEWER_RATES; do
    kbps=$((r / 1000)); d="$VIEWERS/hls-${kbps}k"; mkdir -p "$d"
    # shellcheck disable=SC2046
    ffmpeg -hide_banner -loglevel error -y $(enc "$r" $((SEG_S * SEG_N))) -f hls -hls_time "$SEG_S" \
      -hls_list_size 0 -hls_playlist_type vod -hls_segment_filename "$d/seg%02d.ts" "$d/index.m3u8" \
      >>"$LOG" 2>&1 || { note "ffmpeg failed for the $kbps kbit/s HLS package"; return 1; }
  done
  # shellcheck disable=SC2046
  ffmpeg -hide_banner -loglevel error -y $(enc "$MOVIE_BPS" "$MOVIE_S") -movflags +faststart \
    "$VIEWERS/movie-$((MOVIE_BPS / 1000))k.mp4" >>"$LOG" 2>&1 || { note "ffmpeg failed for the MP4"; return 1; }
  echo "$stamp" >"$WORK/viewers.stamp"
}
if has 5 || has 9; then
  log "viewer media: HLS at $VIEWER_RATES bit/s ($SEG_N x $SEG_S s), MP4 at $MOVIE_BPS bit/s ($MOVIE_S s)"
  make_media
fi

url_list() { # subdir count base > file
  local i
  for ((i = 0; i < $2; i++)); do printf '/media/%s/%s-%05d.bin\n' "$1" "$([[ $1 == small ]] && echo obj || echo seg)" "$i"; done
}
url_list hot "$HOT_N" >"$WORK/hot.urls"
url_list small "$SMALL_N" >"$WORK/small.urls"
url_list cold "$COLD_N" >"$WORK/cold.urls"
sed 's|^/media/|/paced/|' "$WORK/hot.urls" >"$WORK/hot-paced.urls"

# ---------------------------------------------------------------- servers
workers_of() { # layout -> worker count
  case "$1" in
    combined) echo "$SERVER_CORE_N" ;;
    combined:*) echo "${1#combined:}" ;;
    *) echo $(($(echo "$1" | tr ',' '\n' | cut -d= -f2 | paste -sd+ -))) ;;
  esac
}

NGINX_PID=""
# port_free PORT: true when nothing listens on 127.0.0.1:PORT. A second compare.sh (or any
# server) on our ports would otherwise be measured in place of ours.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$NGINX_PORT" "$OASIS_PORT"; do
  port_free "$p" || { echo "compare.sh: 127.0.0.1:$p is already in use (another benchmark run?); stop it first" >&2; exit 1; }
done

# shellcheck source=benches/nginx_conf.sh
source "$ROOT/benches/nginx_conf.sh"
start_nginx() { # workers
  local dir="$OUT/nginx"
  local paced=() r
  # One location per bitrate: limit_rate is Oasis's paced rate (bitrate x factor), and
  # limit_rate_after its burst (initial_burst_secs of the bitrate), per response like Oasis's.
  # limit_rate runs one second of its rate ahead, as Oasis's lead_secs = 1 does
  # (OASIS_LEAD_S=1; Oasis's default is 0).
  for r in $VIEWER_RATES; do
    paced+=("location /paced/viewers/hls-$((r / 1000))k/ { alias $DATA/viewers/hls-$((r / 1000))k/; limit_rate $(awk -v r="$r" -v f="$FACTOR_SEGMENT" 'BEGIN{printf "%d", r * f / 8}'); limit_rate_after $((r / 8 * BURST_S)); }")
  done
  paced+=("location = /paced/viewers/movie-$((MOVIE_BPS / 1000))k.mp4 { alias $DATA/viewers/movie-$((MOVIE_BPS / 1000))k.mp4; limit_rate $(awk -v r="$MOVIE_BPS" -v f="$FACTOR_PROGRESSIVE" 'BEGIN{printf "%d", r * f / 8}'); limit_rate_after $((MOVIE_BPS / 8 * BURST_S)); }")
  NGINX_CPU_AFFINITY=$NGINX_AFFINITY nginx_conf "$dir" "$1" "$NGINX_PORT" "$DATA" "${paced[@]}"
  nginx -t -c "$dir/nginx.conf" >>"$LOG" 2>&1 || { log "FATAL: nginx config invalid"; exit 1; }
  "${SERVER_RUN[@]}" nginx -c "$dir/nginx.conf" >>"$LOG" 2>&1 &
  NGINX_PID=$!
  STARTED_PIDS+=("$NGINX_PID")
  for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$NGINX_PORT/media/hot/seg-00000.bin" && return 0
    sleep 0.1
  done
  log "FATAL: nginx did not start (see $dir/error.log)"; exit 1
}
stop_nginx() {
  [[ -n $NGINX_PID ]] || return 0
  kill -QUIT "$NGINX_PID" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$NGINX_PID" 2>/dev/null || true
  forget_pid "$NGINX_PID"; NGINX_PID=""
}

OASIS_PID=""
OASIS_OK=0
OASIS_WHY="oasis did not start"
OASIS_DATA="$WORK/oasis-data"
# Scenario 8's signing key: random per run, at least 32 characters (base64 of 48 bytes, less
# the three characters that are not letters or digits).
LINK_KEY=$(head -c 48 /dev/urandom | base64 -w0 | tr -d '+/=')
oasis_import() {
  [[ $OASIS_BUILT == 1 ]] || { OASIS_WHY="oasis did not build"; return 1; }
  local stamp="$HOT_N-$SMALL_N-$COLD_N-$(stat -c %Y "$OASIS")-$(cat "$WORK/viewers.stamp" 2>/dev/null)"
  [[ -f $OASIS_DATA/.imported && $(cat "$OASIS_DATA/.imported") == "$stamp" ]] && return 0
  rm -rf "$OASIS_DATA"; mkdir -p "$OASIS_DATA"
  log "oasis import $DATA -> $OASIS_DATA"
  if timeout 1800 "$OASIS" import "$DATA" --data-dir "$OASIS_DATA" >>"$OUT/oasis-import.log" 2>&1; then
    echo "$stamp" >"$OASIS_DATA/.imported"
  else
    OASIS_WHY="oasis import failed: $(tail -n 2 "$OUT/oasis-import.log" | tr '\n' ' ' | cut -c1-200)"
    return 1
  fi
}
start_oasis() { # layout
  OASIS_OK=0
  oasis_import || { note "n/a: $OASIS_WHY"; return 1; }
  local olog="$OUT/oasis-$1.log"
  # Same terms as the nginx config: no access log, long keep-alive, many requests per connection.
  cat >"$OUT/oasis.toml" <<EOF2
# Generated by benches/compare.sh
[server]
access_log = "off"
log_level = "info"
[[listen]]
addr = "127.0.0.1:$OASIS_PORT"
bandwidth_bps = $OASIS_BW
[pacing]
initial_burst_secs = $BURST_S
lead_secs = ${OASIS_LEAD_S:-0}
factor_segment = $FACTOR_SEGMENT
factor_progressive = $FACTOR_PROGRESSIVE
[http]
keepalive_timeout_secs = 600
header_timeout_secs = 600
keepalive_requests_max = 1000000
[links]
keys = ["$LINK_KEY"]
EOF2
  # OASIS_SERVE_ARGS: extra flags, e.g. to turn Oasis's access log off (nginx's is off).
  # shellcheck disable=SC2086
  "${SERVER_RUN[@]}" "$OASIS" serve --config "$OUT/oasis.toml" --data-dir "$OASIS_DATA" --listen "127.0.0.1:$OASIS_PORT" --layout "$1" ${OASIS_SERVE_ARGS:-} >"$olog" 2>&1 &
  OASIS_PID=$!
  STARTED_PIDS+=("$OASIS_PID")
  for _ in $(seq 100); do
    if ! kill -0 "$OASIS_PID" 2>/dev/null; then
      wait "$OASIS_PID" 2>/dev/null
      OASIS_WHY="oasis did not start: 'oasis serve' exited with status $? before listening; last log: $(tail -n 2 "$olog" | tr '\n' ' ' | cut -c1-200)"
      break
    fi
    if grep -q "listening on 127.0.0.1:$OASIS_PORT" "$olog" \
      && curl -fs -o /dev/null "http://127.0.0.1:$OASIS_PORT/media/hot/seg-00000.bin"; then
      OASIS_OK=1; return 0
    fi
    sleep 0.2
  done
  [[ $OASIS_WHY == "oasis did not start" ]] && OASIS_WHY="oasis did not start: not serving after 20 s"
  note "n/a: $OASIS_WHY (layout $1)"
  stop_oasis
  return 1
}
stop_oasis() {
  [[ -n $OASIS_PID ]] || return 0
  kill -TERM "$OASIS_PID" 2>/dev/null
  local rc=0
  for _ in $(seq 100); do kill -0 "$OASIS_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$OASIS_PID" 2>/dev/null; then
    note "oasis did not exit within 10 s of SIGTERM"; kill -KILL "$OASIS_PID"
  else
    wait "$OASIS_PID" 2>/dev/null; rc=$?
    [[ $rc == 0 ]] || note "oasis exited $rc on SIGTERM"
  fi
  forget_pid "$OASIS_PID"; OASIS_PID=""
}

server_pids() { # server -> comma list of the server's processes (master and workers)
  local p=$1
  { echo "$p"; pgrep -P "$p"; } | paste -sd, -
}

# ---------------------------------------------------------------- runners
# server_ticks SERVER: CPU clock ticks (user + system) the server's processes have used so far
server_ticks() {
  local pid=$NGINX_PID
  [[ $1 == oasis ]] && pid=$OASIS_PID
  if [[ -n $pid ]]; then cpu_ticks "$pid"; else echo 0; fi
}
# run_lg NAME SERVER MODE ARGS... : one loadgen run to raw/NAME__SERVER.json, and the server's
# CPU seconds over it to raw/NAME__SERVER.cpu (report.py turns it into CPU per GB; in scenario 4
# the two clients overlap, so each of its .cpu files covers both)
run_lg() {
  local name=$1 server=$2 mode=$3; shift 3
  local port=$NGINX_PORT out="$RAW/${name}__${server}.json" t0
  [[ $server == oasis ]] && port=$OASIS_PORT
  if [[ $server == oasis && $OASIS_OK != 1 ]]; then
    printf '{"label":"%s","server":"oasis","na":"%s"}\n' "$name" "n/a: $OASIS_WHY" >"$out"
    return 0
  fi
  log "$name [$server]: oasis-loadgen $mode $*"
  flush_tcp_metrics
  t0=$(server_ticks "$server")
  if ! "${CLIENT_RUN[@]}" "$LG" "$mode" --base "http://127.0.0.1:$port" --label "$name" --out "$out" "${LG_EXTRA[@]}" "$@" 2>>"$LOG"; then
    [[ -s $out ]] || printf '{"label":"%s","server":"%s","na":"loadgen failed (see log.txt)"}\n' "$name" "$server" >"$out"
  fi
  awk -v a="$t0" -v b="$(server_ticks "$server")" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f\n", (b - a) / hz }' >"$RAW/${name}__${server}.cpu"
}
run_wrk() { # NAME SERVER CONNS PATH
  local port=$NGINX_PORT
  [[ $2 == oasis ]] && port=$OASIS_PORT
  [[ $2 == oasis && $OASIS_OK != 1 ]] && { echo "n/a: $OASIS_WHY" >"$RAW/${1}__${2}.wrk.txt"; return 0; }
  log "$1 [$2]: wrk -c$3 $4"
  flush_tcp_metrics
  timeout $((DURATION_S + 30)) "${CLIENT_RUN[@]}" wrk -t"$WRK_THREADS" -c"$3" -d"${DURATION_S}s" --latency "http://127.0.0.1:$port$4" >"$RAW/${1}__${2}.wrk.txt" 2>&1
}
# alternate REP A B: "A B" without --repeat and in odd repetitions, "B A" in even ones, so
# whatever the first or the second run of a pair gains or loses (the previous run's sockets,
# caches, the box's drift) falls on both sides alike.
alternate() {
  case "$1" in
    .r*) if (( ${1#.r} % 2 == 0 )); then echo "$3 $2"; return; fi ;;
  esac
  echo "$2 $3"
}
# servers [REP]: the order the servers run in, nginx first without --repeat.
servers() { alternate "${1:-}" nginx oasis; }

# settle_hot_pages: both servers' copies of the hot and small objects are dropped from the page
# cache before the hot scenarios, so each server reads its own copies in from disk on its first
# requests, as objects that become popular are. How a file entered the page cache sets its folio
# sizes, and sendfile's cost with them (nginx on the same 2 MiB files at 1000 connections: 0.15-0.16
# s of CPU per GB from 2 MiB folios, 0.19 from 4 KiB pages; docs/bench-log/2026-11-28-page-cache-folios-and-cold-fetch.md): left as
# written, nginx's copies (`head -c`) sat in 4 KiB pages and Oasis's (its import) in 256 KiB
# folios. Read in by the servers, each side's pages are what its own read path makes.
settle_hot_pages() {
  [[ -n $PY ]] || { log "no python3: page cache not settled"; return 0; }
  local n
  n=$("$PY" - "$DATA" "$OASIS_DATA" <<'PYEOF'
import os, sqlite3, sys
data, oasis = sys.argv[1], sys.argv[2]
files = []
for sub in ("hot", "small"):
    d = os.path.join(data, sub)
    files += [os.path.join(d, n) for n in sorted(os.listdir(d))]
try:
    c = sqlite3.connect(f"file:{oasis}/catalog.sqlite?mode=ro", uri=True)
    ids = c.execute("select id from objects where name like 'hot/%' or name like 'small/%'").fetchall()
    files += [f"{oasis}/objects/{i & 0xff:02x}/{i:016x}" for (i,) in ids]
except sqlite3.Error as e:
    print(f"catalog unreadable ({e}); nginx files only", file=sys.stderr)
for f in files:
    fd = os.open(f, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
print(len(files))
PYEOF
) || n="failed"
  log "page cache settled: $n files dropped"
}

# Scenarios 1-4 loop over "${REPS[@]}" outside the server loop: nginx, Oasis, Oasis, nginx, ...
scenario_1() { # hot 2 MiB at 100 and 1000 connections
  local tag=$1 s c r
  for c in 100 1000; do
    for r in "${REPS[@]}"; do
      for s in $(servers "$r"); do
        run_lg "$tag-s1-hot-c$c$r" "$s" get --url-file "$WORK/hot.urls" --connections "$c" --duration-s "$DURATION_S"
        run_wrk "$tag-s1-hot-c$c-wrk$r" "$s" "$c" /media/hot/seg-00000.bin
      done
    done
  done
}
scenario_2() { # hot small 64 KiB at 100 connections
  local tag=$1 s r
  for r in "${REPS[@]}"; do
    for s in $(servers "$r"); do
      run_lg "$tag-s2-small-c100$r" "$s" get --url-file "$WORK/small.urls" --connections 100 --duration-s "$DURATION_S"
      run_wrk "$tag-s2-small-c100-wrk$r" "$s" 100 /media/small/obj-00000.bin
    done
  done
}
cold_sweep() { # NAME SERVER: every cold file at most once, round-robin
  run_lg "$1" "$2" get --url-file "$WORK/cold.urls" --connections 64 --requests "$COLD_N" --duration-s "$((DURATION_S * 2))"
}
scenario_3() { # cold sweep vs the fio io_uring read limit on the same files
  local tag=$1 s
  if [[ ! -f $RAW/fio-cold.json ]]; then
    drop_caches
    log "fio io_uring read limit on the cold set"
    timeout $((DURATION_S * 2 + 30)) fio --name=cold --opendir="$DATA/cold" --rw=read --bs=1M --direct=1 \
      --ioengine=io_uring --iodepth=32 --numjobs=1 --runtime="$((DURATION_S * 2))" --time_based=0 \
      --output-format=json >"$RAW/fio-cold.json" 2>>"$LOG" || note "fio failed"
  fi
  for r in "${REPS[@]}"; do
    for s in $(servers "$r"); do
      drop_caches
      cold_sweep "$tag-s3-cold$r" "$s"
    done
  done
}
scenario_4() { # hot-small p99 while a cold sweep runs
  local tag=$1 s pid r
  for r in "${REPS[@]}"; do
    for s in $(servers "$r"); do
      drop_caches
      cold_sweep "$tag-s4-mixed-cold$r" "$s" &
      pid=$!
      sleep 0.5
      run_lg "$tag-s4-mixed-small$r" "$s" get --url-file "$WORK/small.urls" --connections 50 --duration-s "$DURATION_S"
      wait "$pid"
    done
  done
}
# server_pid SERVER: the server's main process id (empty when it is not running)
server_pid() { if [[ $1 == oasis ]]; then echo "$OASIS_PID"; else echo "$NGINX_PID"; fi; }
# media_url SERVER PATH: the path under /media/ for Oasis (it paces by itself), under /paced/
# for nginx (limit_rate per bitrate)
media_url() { if [[ $1 == oasis ]]; then echo "/media/$2"; else echo "/paced/$2"; fi; }
# loopback_bps: the iperf3 ceiling of this run in bit/s (scenario 7 runs first when it has not)
loopback_bps() {
  compgen -G "$RAW/iperf3-*.json" >/dev/null || scenario_7
  "$PY" - "$RAW" <<'PYEOF'
import glob, json, sys
total = 0.0
for p in glob.glob(sys.argv[1] + "/iperf3-*.json"):
    try:
        total += json.load(open(p))["end"]["sum_received"]["bits_per_second"]
    except (OSError, ValueError, KeyError):
        pass
print(int(total))
PYEOF
}
scenario_5() { # viewer capacity: HLS players at 1, 4 and 8 Mbit/s, ramped until one stalls
  local tag=$1 s r rate kbps lbps nofile limit step cap args
  lbps=$(loopback_bps); nofile=$(ulimit -n)
  echo "viewer_limits loopback_bps=$lbps nofile=$nofile" >>"$OUT/machine.txt"
  for rate in $VIEWER_RATES; do
    echo "viewer_limit $((rate / 1000))k $(( lbps / rate < nofile ? lbps / rate : nofile ))" >>"$OUT/machine.txt"
  done
  # Repetitions outermost: a run cut short still has every bitrate of its first repetitions.
  for r in "${REPS[@]}"; do
    for rate in $VIEWER_RATES; do
      kbps=$((rate / 1000))
      limit=$((lbps / rate)); ((nofile < limit)) && limit=$nofile
      if [[ $QUICK == 1 ]]; then
        args=(--start-streams 5 --step-streams 5 --step-s 6 --buffer-s 6 --max-streams 10 --duration-s 12)
      else
        # Steps of 1/8 of the limit (at least 10 viewers) up to 2x it, so the server stalls
        # first (loopback measured by iperf3 on a busy box can read low); but the client holds
        # one descriptor per viewer under the same limit.
        step=$((limit / 8)); ((step < 10)) && step=10
        cap=$((limit * 2)); ((cap > nofile - 256)) && cap=$((nofile - 256))
        args=(--start-streams "$step" --step-streams "$step" --step-s 10 --buffer-s 8 --max-streams "$cap")
      fi
      for s in $(servers "$r"); do
        run_lg "$tag-s5-hls-${kbps}k$r" "$s" paced --url "$(media_url "$s" "viewers/hls-${kbps}k/index.m3u8")" \
          --paced-bps "$rate" --start-s 4 --discard-body --server-pids "$(server_pids "$(server_pid "$s")")" "${args[@]}"
      done
    done
  done
}
scenario_9() { # 2x overload: Oasis's bandwidth budget set to the measured capacity
  local tag=$1 s r v=${OVERLOAD_SUSTAINED:-} d=40 kbps=$((MOVIE_BPS / 1000)) f
  [[ $QUICK == 1 ]] && d=12
  # The measured capacity: Oasis's viewers sustained at 4 Mbit/s (scenario 5 of this run, else
  # OVERLOAD_SUSTAINED, else a default) x the bitrate.
  if [[ -z $v ]]; then
    f=$(ls "$RAW"/*-s5-hls-${kbps}k*__oasis.json 2>/dev/null | head -n 1)
    [[ -n $f ]] && v=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("streams_sustained") or "")' "$f")
    [[ -z $v || $v == 0 ]] && { v=500; [[ $QUICK == 1 ]] && v=10; }
  fi
  # Each progressive stream reserves Oasis's own bitrate of the file (size * 8 / movie duration,
  # as its catalog computes it) x factor_progressive: the budget admits C of them; 2C are
  # offered, at most what Oasis's connections_max holds on this host (it fits it to the
  # descriptor limit less a twentieth for cached files and a fortieth kept free when the limit
  # is tight, src/fd_limit.rs fd_shares) and the client's limit.
  local bw c movie="$VIEWERS/movie-${kbps}k.mp4" dur nofile offered_max
  nofile=$(ulimit -n)
  dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$movie" 2>>"$LOG")
  bw=$(awk -v v="$v" -v r="$MOVIE_BPS" 'BEGIN{printf "%.0f", v * r}')
  c=$(awk -v bw="$bw" -v size="$(stat -c %s "$movie")" -v d="${dur:-$MOVIE_S}" -v f="$FACTOR_PROGRESSIVE" \
    'BEGIN{printf "%d", bw / (size * 8 / d * f)}')
  offered_max=$((nofile - nofile / 20 - nofile / 40 - 256))
  if ((2 * c > offered_max)); then
    note "overload: 2C = $((2 * c)) viewers exceed the descriptor limit's room ($offered_max); budget and C scaled down"
    c=$((offered_max / 2))
    bw=$(awk -v c="$c" -v size="$(stat -c %s "$movie")" -v d="${dur:-$MOVIE_S}" -v f="$FACTOR_PROGRESSIVE" \
      'BEGIN{per = size * 8 / d * f; printf "%.0f", c * per + per / 2}')
  fi
  echo "overload sustained_viewers=$v bandwidth_bps=$bw admits=$c offered=$((2 * c)) movie_bps=$MOVIE_BPS" >>"$OUT/machine.txt"
  log "overload: Oasis bandwidth_bps=$bw ($v x $MOVIE_BPS; admits $c streams of $kbps kbit/s x $FACTOR_PROGRESSIVE), $((2 * c)) offered"
  stop_oasis; OASIS_BW=$bw start_oasis "$CURRENT_LAYOUT"
  for r in "${REPS[@]}"; do
    for s in $(servers "$r"); do
      run_lg "$tag-s9-overload-${kbps}k$r" "$s" paced --url "$(media_url "$s" "viewers/movie-${kbps}k.mp4")" \
        --paced-bps "$MOVIE_BPS" --buffer-s 8 --start-s 4 --count-stalls --discard-body \
        --start-streams $((2 * c)) --step-streams 1 --max-streams $((2 * c)) --step-s "$d" --duration-s "$d" \
        --server-pids "$(server_pids "$(server_pid "$s")")"
    done
  done
  stop_oasis; start_oasis "$CURRENT_LAYOUT"
}
scenario_6() { # idle connections: active p99 and server RSS per connection
  local tag=$1 s n=50000 pid
  [[ $QUICK == 1 ]] && n=200
  for s in $(servers); do
    pid=$NGINX_PID
    [[ $s == oasis ]] && pid=$OASIS_PID
    run_lg "$tag-s6-idle" "$s" idle --idle "$n" --connections 10 --url-file "$WORK/small.urls" \
      --duration-s "$DURATION_S" --rss-pids "$(server_pids "${pid:-0}")"
  done
}
# sign_urls IN OUT: one `oasis sign` link (object scope, valid a day) per /media/ path in IN.
sign_urls() {
  local path
  : >"$2"
  while read -r path; do
    "$OASIS" sign "${path#/media/}" --ttl 1d --base "http://127.0.0.1:$OASIS_PORT" \
      --config "$OUT/oasis.toml" >>"$2" 2>>"$LOG" || return 1
  done <"$1"
}
# warm_set SET COUNT: every object of the set read once through Oasis, so the public and the
# signed runs start from the same page cache (what settle_hot_pages dropped, Oasis reads back in).
warm_set() {
  "${CLIENT_RUN[@]}" "$LG" get --base "http://127.0.0.1:$OASIS_PORT" --url-file "$WORK/$1.urls" \
    --connections 4 --requests "$2" --duration-s 60 --label "warm-$1" --out "$OUT/warm-$1.json" \
    2>>"$LOG" || note "warm-up of $1 failed (see log.txt)"
}
scenario_8() { # signed links against public reads, Oasis only: hot 2 MiB and 64 KiB, 100 conns
  local tag=$1 set r kind file code d=$DURATION_S
  [[ $QUICK == 1 ]] && d=1
  [[ $S8_CONTROL == 1 ]] && note "scenario 8 control (S8_CONTROL=1): the 'signed' runs read the public URLs, so signed/public is public against public"
  if [[ $OASIS_OK == 1 ]]; then
    for set in hot small; do
      sign_urls "$WORK/$set.urls" "$OUT/$set-signed.urls" || note "oasis sign failed for $set (see log.txt)"
    done
    # A refused link would measure 403s: say so where the smoke check looks.
    code=$(curl -s -o /dev/null -w '%{http_code}' "$(head -n 1 "$OUT/hot-signed.urls")")
    [[ $code == 200 ]] || note "signed link refused: HTTP $code for the first of $OUT/hot-signed.urls"
    warm_set hot "$HOT_N"
    warm_set small "$SMALL_N"
  fi
  for set in hot small; do
    for r in "${REPS[@]}"; do
      for kind in $(alternate "$r" public signed); do
        file="$WORK/$set.urls"
        [[ $kind == signed && $S8_CONTROL != 1 ]] && file="$OUT/$set-signed.urls"
        # Other work on the box takes CPU from both sides of a pair unevenly: log how much.
        log "load average before $set $kind$r: $(cut -d' ' -f1-3 /proc/loadavg)"
        run_lg "$tag-s8-$set-c100-$kind$r" oasis get --url-file "$file" --connections 100 --duration-s "$d"
      done
    done
  done
}
scenario_7() { # loopback ceiling: one iperf3 pair per core (iperf3 < 3.16 is single-threaded)
  local i n spids=() cpids=()
  n=$(nproc)
  log "iperf3 -Z loopback ceiling ($n parallel pairs)"
  for ((i = 0; i < n; i++)); do
    iperf3 -s -p $((IPERF_PORT + i)) -1 >>"$LOG" 2>&1 &
    spids+=($!); STARTED_PIDS+=($!)
  done
  sleep 0.5
  for ((i = 0; i < n; i++)); do
    timeout $((DURATION_S + 20)) iperf3 -c 127.0.0.1 -p $((IPERF_PORT + i)) -Z -l 1M -t "$DURATION_S" -J \
      >"$RAW/iperf3-$i.json" 2>>"$LOG" &
    cpids+=($!)
  done
  for i in "${cpids[@]}"; do wait "$i" || note "an iperf3 client failed"; done
  for i in "${spids[@]}"; do wait "$i" 2>/dev/null; forget_pid "$i"; done
}

# ---------------------------------------------------------------- main
first=1
for layout in $LAYOUTS; do
  tag=$(echo "$layout" | tr ',=:' '_-_')
  w=$(workers_of "$layout")
  log "layout $layout: nginx worker_processes $w"
  echo "layout $tag $layout workers=$w" >>"$OUT/machine.txt"
  start_nginx "$w"
  CURRENT_LAYOUT=$layout
  start_oasis "$layout"
  for sc in 1 2 3 4 5 6 8 9; do
    has "$sc" || continue
    if [[ $first != 1 && $sc != 1 && $sc != 3 && $sc != 4 ]]; then continue; fi
    [[ $sc == 1 || $sc == 2 || $sc == 8 ]] && settle_hot_pages
    "scenario_$sc" "$tag"
  done
  stop_oasis
  stop_nginx
  first=0
done
has 7 && ! compgen -G "$RAW/iperf3-*.json" >/dev/null && scenario_7

log "writing summary"
if [[ -n $PY ]]; then
  "$PY" "$ROOT/benches/report.py" "$OUT" >>"$LOG" 2>&1 || log "report.py failed (see log.txt)"
fi
log "done: $OUT/summary.md"
[[ -f $OUT/summary.md ]] && cat "$OUT/summary.md"
if [[ $QUICK == 1 ]]; then
  # The smoke exists so the harness cannot rot: a side that produced no numbers fails it.
  if [[ ! -f $OUT/summary.md ]] || grep -qE "loadgen failed|import failed|did not build|did not start|exited [1-9]|did not exit|sign failed|link refused|had non-2xx responses" "$OUT/summary.md" "$NOTES" 2>/dev/null; then
    log "FATAL: the smoke run lost Oasis or nginx numbers (see $OUT/summary.md and log.txt)"
    exit 1
  fi
fi
