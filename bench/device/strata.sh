#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: Strata's bench over the bench configurations, then
# per-kernel profiles of single buckets while the time budget lasts. Everything lands in OUT_DIR (5 files: the call
# returns at most 8, and a wrapper's own log is one more).
# Usage: bash bench/device/strata.sh OUT_DIR [CONFIGS]   (CONFIGS: comma-separated, default all; BUDGET s, default 570;
#   CASES: the bench's --cases list, e.g. f16:1,f16:8,q8:1, default its full list)
set -u
out=$1
configs=${2:-}
start=$(date +%s)
budget=${BUDGET:-570}
left() { echo $((budget - ($(date +%s) - start))); }
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$out/gpu.csv" 2>&1
# SM clock and utilisation twice a second for the whole call: an idle H200 sits at 345 MHz, so a figure is only
# comparable when the clock log shows the GPU at its boost clock while it was measured
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv,noheader -lms 500 >> "$out/gpu.csv" 2>&1 &
clocks=$!

# the bench writes its JSON after every case, so a run stopped by the timeout keeps what it measured
timeout $(($(left) - 100)) node dist/bench.mjs ${configs:+--config "$configs"} ${CASES:+--cases "$CASES"} --out "$out/strata.json" 2>&1 | tee "$out/strata.log"

# profiles, most useful first: each needs about 30 s (compile, roofline, profiled runs)
profile() { # NAME ARGS...
  local name=$1; shift
  [ "$(left)" -gt 40 ] || { echo "profile $name: skipped, $(left) s left" >> "$out/profile.txt"; return; }
  { echo "== profile $*"; timeout $(($(left) - 5)) node dist/bench.mjs profile "$@" --top 30 --json "$out/profile-$name.json" 2>&1 | grep -v 'artificially reduced'; } >> "$out/profile.txt"
}
profile llama-400m-decode llama-400m --storage f16 --context 192
profile llama-400m-prefill llama-400m --storage f16 --tokens 128
profile llama-400m-decode-f32 llama-400m --storage f32 --context 192
profile granite-decode granite4h-350m-like --storage f16 --context 192
profile granite-prefill granite4h-350m-like --storage f16 --tokens 128
profile jamba-prefill jamba-small --storage f16 --tokens 128
# the device call returns at most 8 files: the per-profile JSON go back as one archive
(cd "$out" && ls profile-*.json >/dev/null 2>&1 && tar czf profiles.tar.gz profile-*.json && rm -f profile-*.json)
tail -c 3000 "$out/profile.txt"
kill $clocks 2>/dev/null
echo "strata.sh: done in $(($(date +%s) - start)) s"
