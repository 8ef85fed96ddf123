#!/usr/bin/env bash
# benches/restart.sh: death-to-serving of `oasis serve` under `oasis agent`, over N kills.
#
#   bash benches/restart.sh [KILLS]        # default 100
#
# Runs tests/agent.rs's kill test on a release build: an agent supervises a real server on a
# fixed loopback port; the server is killed with SIGKILL KILLS times, and each time the clock
# runs from the kill until `GET /healthz` answers 200 again (polled every 2 ms), then waits for
# the agent to see the new run up before the next kill. Prints every time in kill order and the
# summary line (median, p99, max, and how many restarts failed and were retried after a backoff,
# e.g. because the killed server's listening socket had not closed yet). The test asserts only
# that the server came back each time (within 30 s), never a time.
set -euo pipefail
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ ${1:-} == -h || ${1:-} == --help ]] && usage 0
KILLS=${1:-100}
[[ $KILLS =~ ^[1-9][0-9]*$ ]] || usage
cd "$(dirname "$0")/.."
echo "== $KILLS kills, release build, commit $(git rev-parse --short HEAD), $(date -u +%F)"
OASIS_AGENT_KILLS=$KILLS cargo test --release --test agent the_agent_brings_a_killed_server_back_every_time \
  -- --nocapture --exact 2>&1 | grep -E "^(death-to-serving|restart summary)|panicked|FAILED|test result"
