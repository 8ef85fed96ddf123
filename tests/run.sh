#!/usr/bin/env bash
# The Oasis test gate, the same locally and in CI (.ci/run calls it): installs the system packages
# the tests use (real clients: curl, ffmpeg/ffprobe, Chromium, npm for hls.js; nginx and wrk for
# the load-harness smoke, which installs fio, iperf3 and python3-matplotlib itself; postgresql
# for the PostgreSQL catalog's throw-away clusters; iproute2's ip and tc for the pool tests in a
# simulated network, which need root) and hls.js,
# then formatting, lints, every test (unit, integration, loom), docs, the benchmarks' build, and a
# seconds-long smoke run of the load harness (no timing assertions anywhere).
#
# `bash tests/run.sh --fast`: formatting, lints and the unit tests only (a minute or two, no
# packages installed), for the edit-compile loop; the full gate is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --fast ]]; then
  echo "== fmt";    cargo fmt --all -- --check
  echo "== clippy"; cargo clippy --workspace --all-targets -- -D warnings
  echo "== unit tests"; cargo test --workspace --lib --bins
  echo "== fast gates passed"
  exit 0
fi

need=()
for tool in curl:curl ffmpeg:ffmpeg ffprobe:ffmpeg chromium:chromium npm:npm nginx:nginx wrk:wrk ip:iproute2 tc:iproute2; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
# The PostgreSQL catalog tests start throw-away clusters with Debian's server binaries, which
# are not on PATH (/usr/lib/postgresql/<version>/bin).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# hls.js for the browser test of tests/signed_links.rs, from the npm registry into
# tests/web/node_modules (the test reads it there and never fetches it); skipped when the pinned
# version is already installed. Keep the version in step with tests/web/package.json.
hls_js_version=1.7.4
if [[ $(node -p "require('./tests/web/node_modules/hls.js/package.json').version" 2>/dev/null) != "$hls_js_version" ]]; then
  echo "installing hls.js $hls_js_version into tests/web"
  npm install --no-audit --no-fund --save-exact --prefix tests/web "hls.js@$hls_js_version"
fi

echo "== fmt";     cargo fmt --all -- --check
echo "== clippy";  cargo clippy --workspace --all-targets -- -D warnings
echo "== test";    cargo test --workspace
echo "== loom";    RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p oasis-engine --release --test loom_resource
echo "== doc";     RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== bench build"; cargo bench --workspace --no-run --quiet
echo "== load harness smoke"; bash benches/compare.sh --quick
echo "== fuzz";    bash fuzz/run.sh "${OASIS_FUZZ_SECS:-20}"
echo "== all gates passed"
