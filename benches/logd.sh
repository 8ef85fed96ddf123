#!/usr/bin/env bash
# benches/logd.sh: the log server's figures, each against its reference measured in the same run.
#
#   bash benches/logd.sh                         # every scenario, --repeat 3 (15-25 min)
#   bash benches/logd.sh --scenarios 1,2 --repeat 3 --conns 4 --mib-per-conn 256
#   bash benches/logd.sh --scenarios 4 --kill-mib-per-conn 64
#   bash benches/logd.sh --quick                 # seconds-long smoke run (tiny data, 1 repetition)
#
# Scenarios (each repetition runs both sides of a comparison back to back, the order alternating
# between repetitions; fresh data directories every time; everything on loopback):
#   1  ingest with durable acknowledgements: `oasis logd` (fdatasync every 5 ms or 1 MiB) fed by
#      `oasis-logload ship` (N connections, a stream each, 256 KiB frames, 4 MiB window), against
#      the machine's own limit: the same bytes over N plain connections into a file each with
#      the same fdatasync cadence (`oasis-logload sink`: 5 ms, or 1 MiB / N per file, which is
#      logd's one commit of every written file per 1 MiB in all), timed to the sink's close after
#      its last sync. Target: >= 0.8x.
#   2  ingest without fsync: logd with `[logd] fsync = false` (acknowledged once written) against
#      `nc -l > file`, one nc per connection. Target: >= 0.9x.
#   3  rsyslog (Debian's, a separate instance: `imptcp` on a loopback port -> `omfile`, raw
#      lines): the same lines over N plain connections, timed until its file holds them all;
#      logd durable and logd without fsync against it; server CPU per GB. Target: >= 2x.
#   4  kill -9 mid-run: N `oasis log-ship` following files into logd, and N plain senders that
#      reconnect and go on from the line a failed write cut, into rsyslog; each server killed
#      once a third of the bytes are stored, restarted a second later; lines lost and repeated
#      after everything settles (--kill-mib-per-conn, 64 by default: this one keeps sources, data
#      and what is read back on disk at once). Target: logd loses 0.
#   5  10,000 shippers held by one logd (a stream each): RSS per connection idle and at half the
#      peak, the peak, and the ACK latency at half of it (`oasis-logload hold`, 4 KiB frames).
#
# Writes bench-results/logd-<UTC timestamp>/{raw/*.json, log.txt, summary.md}; summary.md (by
# benches/logd_report.py) gives medians, ranges and the per-repetition ratios with their range.
# Installs rsyslog, netcat-openbsd and time from apt when missing. Stops everything it started on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS="1,2,3,4,5"
REPEAT=3
CONNS=4
MIB=256
KILL_MIB=64
HOLD_CONNS=10000
HOLD_PHASE_S=10
QUICK=0
PORT=17420

usage() { sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenarios) SCENARIOS="$2"; shift ;;
    --repeat) REPEAT="$2"; shift ;;
    --conns) CONNS="$2"; shift ;;
    --mib-per-conn) MIB="$2"; shift ;;
    --kill-mib-per-conn) KILL_MIB="$2"; shift ;;
    --hold-conns) HOLD_CONNS="$2"; shift ;;
    --quick) QUICK=1 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done
if [[ $QUICK == 1 ]]; then
  REPEAT=1 MIB=8 KILL_MIB=8 HOLD_CONNS=200 HOLD_PHASE_S=2
fi
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "--repeat wants a positive integer" >&2; exit 2; }
BYTES=$((MIB * 1024 * 1024))
KILL_BYTES=$((KILL_MIB * 1024 * 1024))
has() { [[ ",$SCENARIOS," == *",$1,"* ]]; }

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench-results/logd-$TS"
RAW="$OUT/raw"
WORK="$ROOT/bench-results/logd-work"
mkdir -p "$RAW"
rm -rf "$WORK" && mkdir -p "$WORK"
LOG="$OUT/log.txt"
log() { echo "[logd.sh $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
# shellcheck source=benches/cores.sh
source "$ROOT/benches/cores.sh"
HZ=$(getconf CLK_TCK)

STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]}"; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null; done
  STARTED=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

need=()
command -v rsyslogd >/dev/null || [[ -x /usr/sbin/rsyslogd ]] || need+=(rsyslog)
command -v nc >/dev/null || need+=(netcat-openbsd)
[[ -x /usr/bin/time ]] || need+=(time)
if ((${#need[@]})); then
  log "installing ${need[*]} from apt"
  apt-get update -qq >>"$LOG" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$LOG" 2>&1 \
    || { log "FATAL: apt-get install ${need[*]} failed"; exit 1; }
fi
RSYSLOGD=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)

log "building release binaries"
(cd "$ROOT" && cargo build --release -p oasis --bin oasis && cargo build --release -p oasis-logload) >>"$LOG" 2>&1 \
  || { log "FATAL: the build failed (see $LOG)"; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OASIS="$TARGET_DIR/release/oasis"
LOAD="$TARGET_DIR/release/oasis-logload"
{
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  kernel: $(uname -r)  cpus: $(nproc)"
  echo "rsyslog: $("$RSYSLOGD" -v 2>/dev/null | head -1)"
  echo "conns: $CONNS  bytes per conn: $BYTES (kill -9 runs: $KILL_BYTES)  repeat: $REPEAT  hold conns: $HOLD_CONNS"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >>"$LOG"

# One run's data at a time: a data set, or a kill -9 run's sources, data and read-back.
free_b=$(df --output=avail -B1 "$WORK" | tail -1)
need_b=$((CONNS * BYTES > 3 * CONNS * KILL_BYTES ? CONNS * BYTES : 3 * CONNS * KILL_BYTES))
need_b=$((need_b + (512 << 20)))
if ((free_b < need_b)); then
  log "FATAL: $free_b bytes free under $WORK, the run needs about $need_b; free space or lower --mib-per-conn"
  exit 1
fi

cpu_s() { awk -v t="$(cpu_ticks "$1")" -v hz="$HZ" 'BEGIN { printf "%.3f", t / hz }'; }
forget() { local keep=() p; for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; STARTED=("${keep[@]}"); }
stop() { # PID: SIGTERM, then SIGKILL after 30 s
  local pid=$1
  kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  forget "$pid"
}
wait_port() { # PORT: until something listens there (30 s)
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  log "nothing listens on $1"; return 1
}

start_logd() { # DATA_DIR FSYNC(true|false) [EXTRA_TOML] -> LOGD_PID
  local conf="$WORK/logd.toml"
  printf '[logd]\nfsync = %s\n%s\n' "$2" "${3:-}" >"$conf"
  "$OASIS" logd --config "$conf" --listen "127.0.0.1:$PORT" --data-dir "$1" >>"$WORK/logd.log" 2>&1 &
  LOGD_PID=$!
  STARTED+=("$LOGD_PID")
  wait_port "$PORT"
}

# What the server used of the CPU from START_CPU to now, beside a run's JSON.
cpu_note() { # NAME PID START_CPU
  awk -v a="$3" -v b="$(cpu_s "$2")" 'BEGIN { printf "%.3f\n", b - a }' >"$RAW/$1.cpu"
}

run_logd_ship() { # NAME FSYNC
  rm -rf "$WORK/data"
  start_logd "$WORK/data" "$2" || return 1
  local c0; c0=$(cpu_s "$LOGD_PID")
  "$LOAD" ship --addr "127.0.0.1:$PORT" --conns "$CONNS" --bytes "$BYTES" --prefix "$1" \
    >"$RAW/$1.json" 2>>"$LOG" || log "$1: ship failed"
  cpu_note "$1" "$LOGD_PID" "$c0"
  stop "$LOGD_PID"
  rm -rf "$WORK/data"
}

run_sink() { # NAME
  rm -rf "$WORK/sink"
  "$LOAD" sink --listen "127.0.0.1:$((PORT + 1))" --dir "$WORK/sink" \
    --sync-interval-ms 5 --sync-bytes $((1048576 / CONNS)) 2>>"$LOG" &
  local pid=$!; STARTED+=("$pid")
  wait_port $((PORT + 1)) || return 1
  local c0; c0=$(cpu_s "$pid")
  "$LOAD" plain --addr "127.0.0.1:$((PORT + 1))" --conns "$CONNS" --bytes "$BYTES" --wait-close \
    >"$RAW/$1.json" 2>>"$LOG" || log "$1: plain failed"
  cpu_note "$1" "$pid" "$c0"
  stop "$pid"
  rm -rf "$WORK/sink"
}

run_nc() { # NAME: one `nc -l > file` per connection, its CPU time taken by /usr/bin/time
  rm -rf "$WORK/nc" && mkdir -p "$WORK/nc"
  local i p pids=() addrs=()
  for ((i = 0; i < CONNS; i++)); do
    /usr/bin/time -f "%U %S" -o "$WORK/nc/time.$i" nc -l 127.0.0.1 $((PORT + 10 + i)) >"$WORK/nc/$i" 2>>"$LOG" &
    pids+=($!); STARTED+=($!); addrs+=("127.0.0.1:$((PORT + 10 + i))")
  done
  sleep 0.5 # nc takes one connection: no probe, a moment to listen
  "$LOAD" plain --addr "$(IFS=,; echo "${addrs[*]}")" --conns "$CONNS" --bytes "$BYTES" --wait-close \
    >"$RAW/$1.json" 2>>"$LOG" || log "$1: plain to nc failed"
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; forget "$p"; done
  cat "$WORK"/nc/time.* 2>/dev/null | awk '{ s += $1 + $2 } END { printf "%.3f\n", s }' >"$RAW/$1.cpu"
  rm -rf "$WORK/nc"
}

RS_PORT=$((PORT + 2))
start_rsyslog() { # OUT_FILE -> RS_PID: a separate rsyslogd, imptcp on RS_PORT -> omfile OUT_FILE
  mkdir -p "$WORK/rs-work"
  {
    echo "global(workDirectory=\"$WORK/rs-work\" maxMessageSize=\"64k\")"
    echo 'module(load="imptcp")'
    echo 'template(name="raw" type="string" string="%rawmsg%\n")'
    echo "ruleset(name=\"bench\") { action(type=\"omfile\" file=\"$1\" template=\"raw\") }"
    echo "input(type=\"imptcp\" port=\"$RS_PORT\" address=\"127.0.0.1\" ruleset=\"bench\")"
  } >"$WORK/rsyslog.conf"
  rm -f "$WORK/rsyslog.pid"
  "$RSYSLOGD" -n -f "$WORK/rsyslog.conf" -i "$WORK/rsyslog.pid" >>"$WORK/rsyslog.log" 2>&1 &
  RS_PID=$!
  STARTED+=("$RS_PID")
  wait_port "$RS_PORT"
}

size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
# Waits until FILE holds BYTES, or has not grown for STILL_S seconds; prints the size.
wait_size() { # FILE BYTES STILL_S
  local last=-1 still=0 now
  while :; do
    now=$(size_of "$1")
    ((now >= $2)) && break
    if ((now == last)); then still=$((still + 1)); else still=0; last=$now; fi
    ((still >= $3 * 10)) && break
    sleep 0.1
  done
  echo "$now"
}

run_rsyslog() { # NAME: throughput until the file holds every line
  rm -rf "$WORK/rs" && mkdir -p "$WORK/rs"
  start_rsyslog "$WORK/rs/all.log" || return 1
  local c0 t0 t1 got total
  c0=$(cpu_s "$RS_PID")
  t0=$(date +%s.%N)
  "$LOAD" plain --addr "127.0.0.1:$RS_PORT" --conns "$CONNS" --bytes "$BYTES" \
    >"$RAW/$1.send.json" 2>>"$LOG" || log "$1: plain to rsyslog failed"
  total=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' "$RAW/$1.send.json")
  got=$(wait_size "$WORK/rs/all.log" "${total:-1}" 15)
  t1=$(date +%s.%N)
  cpu_note "$1" "$RS_PID" "$c0"
  awk -v b="$got" -v want="${total:-0}" -v a="$t0" -v z="$t1" 'BEGIN {
    printf "{\"mode\":\"rsyslog\",\"bytes\":%d,\"sent\":%d,\"secs\":%.3f,\"bytes_per_s\":%.1f}\n", b, want, z - a, b / (z - a) }' \
    >"$RAW/$1.json"
  stop "$RS_PID"
  rm -rf "$WORK/rs"
}

acked_all() { # STATE_DIR SOURCE_DIR: whether every file is acknowledged to its end
  local i want got
  for ((i = 0; i < CONNS; i++)); do
    want=$(size_of "$2/$i.log")
    got=$(sed -n 's/^acked //p' "$1/$i" 2>/dev/null)
    [[ ${got:-0} -ge $want ]] || return 1
  done
}

kill_logd() { # NAME: oasis log-ship x N into logd, kill -9 logd at a third, restart, count
  local k="$WORK/k" i p pids=() total
  rm -rf "$k" && mkdir -p "$k/st" "$k/out"
  "$LOAD" write --dir "$k/src" --conns "$CONNS" --bytes "$KILL_BYTES" >/dev/null 2>>"$LOG"
  total=$(cat "$k"/src/*.log | wc -c)
  start_logd "$k/data" true || return 1
  for ((i = 0; i < CONNS; i++)); do
    "$OASIS" log-ship --servers "127.0.0.1:$PORT" --stream "kill/$i" --state-file "$k/st/$i" \
      "$k/src/$i.log" 2>>"$k/ship.log" &
    pids+=($!); STARTED+=($!)
  done
  while (($(du -sb "$k/data" | cut -f1) < total / 3)); do sleep 0.05; done
  kill -KILL "$LOGD_PID"; wait "$LOGD_PID" 2>/dev/null; forget "$LOGD_PID"
  log "$1: logd killed at $(du -sb "$k/data" | cut -f1) of $total bytes"
  sleep 1
  start_logd "$k/data" true || return 1
  for _ in $(seq 3000); do acked_all "$k/st" "$k/src" && break; sleep 0.1; done
  for p in "${pids[@]}"; do stop "$p"; done
  stop "$LOGD_PID"
  for ((i = 0; i < CONNS; i++)); do
    "$OASIS" logs cat "kill/$i" --data-dir "$k/data" >"$k/out/$i" 2>>"$LOG" \
      || log "$1: logs cat kill/$i failed"
  done
  "$LOAD" count --conns "$CONNS" --bytes "$KILL_BYTES" "$k"/out/* >"$RAW/$1.json" 2>>"$LOG"
  rm -rf "$k"
}

kill_rsyslog() { # NAME: N reconnecting plain senders into rsyslog, kill -9 at a third, restart
  local k="$WORK/k" spid total
  rm -rf "$k" && mkdir -p "$k"
  total=$((CONNS * KILL_BYTES))
  start_rsyslog "$k/all.log" || return 1
  "$LOAD" plain --addr "127.0.0.1:$RS_PORT" --conns "$CONNS" --bytes "$KILL_BYTES" --reconnect \
    >"$RAW/$1.send.json" 2>>"$LOG" &
  spid=$!; STARTED+=("$spid")
  while (($(size_of "$k/all.log") < total / 3)); do sleep 0.05; done
  kill -KILL "$RS_PID"; wait "$RS_PID" 2>/dev/null; forget "$RS_PID"
  log "$1: rsyslogd killed at $(size_of "$k/all.log") of about $total bytes"
  sleep 1
  start_rsyslog "$k/all.log" || return 1
  wait "$spid"; forget "$spid"
  wait_size "$k/all.log" $((total * 2)) 5 >/dev/null
  stop "$RS_PID"
  "$LOAD" count --conns "$CONNS" --bytes "$KILL_BYTES" "$k/all.log" >"$RAW/$1.json" 2>>"$LOG"
  rm -rf "$k"
}

run_hold() { # NAME: HOLD_CONNS shippers at once on one logd
  rm -rf "$WORK/data"
  start_logd "$WORK/data" true "connections_max = $((HOLD_CONNS + 1000))
streams_max = $((HOLD_CONNS + 1000))" || return 1
  (ulimit -n "$(ulimit -Hn)"; "$LOAD" hold --addr "127.0.0.1:$PORT" --conns "$HOLD_CONNS" \
    --phase-s "$HOLD_PHASE_S" --rss-pid "$LOGD_PID" --prefix "$1") >"$RAW/$1.json" 2>>"$LOG" \
    || log "$1: hold failed"
  stop "$LOGD_PID"
  rm -rf "$WORK/data"
}

# FIRST... -- SECOND...: both commands, in this order in odd repetitions, the other in even ones.
pair() {
  local a=() b=() seen=0 x
  for x in "$@"; do
    if [[ $x == -- ]]; then seen=1; elif ((seen)); then b+=("$x"); else a+=("$x"); fi
  done
  # Each side starts with no dirty pages of its own: what the side before it (or the data
  # generation) left in the page cache would otherwise be written back on its time.
  if ((r % 2)); then sync; "${a[@]}"; sync; "${b[@]}"; else sync; "${b[@]}"; sync; "${a[@]}"; fi
}

for ((r = 1; r <= REPEAT; r++)); do
  log "repetition $r of $REPEAT"
  has 1 && pair run_logd_ship "s1-logd.r$r" true -- run_sink "s1-sink.r$r"
  has 2 && pair run_logd_ship "s2-logd.r$r" false -- run_nc "s2-nc.r$r"
  if has 3; then
    pair run_logd_ship "s3-logd.r$r" true -- run_rsyslog "s3-rsyslog.r$r"
    run_logd_ship "s3-logd-nofsync.r$r" false
  fi
  has 4 && pair kill_logd "s4-logd.r$r" -- kill_rsyslog "s4-rsyslog.r$r"
  has 5 && run_hold "s5-hold.r$r"
done

log "writing the summary"
python3 "$ROOT/benches/logd_report.py" "$OUT" >"$OUT/summary.md" 2>>"$LOG" || log "logd_report.py failed"
cat "$OUT/summary.md"
log "done: $OUT"
