#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh` and right after llama.cpp's call (run-llamacpp.sh) on the same
# warm machine: Strata's f16 bench of every configuration (batch 1 and 8, the README table's cases), then the
# 128-token prefill of granite4h-350m-like and llama-400m with subgroup matrices off, then on again (granite4h-350m-like's prefill did not move in the last
# lease; this times both paths in one call, alternated), then the batch-8 decode step per kernel. 4 files in OUT_DIR.
# Usage: bash bench/device/same-lease.sh OUT_DIR   (BUDGET s, default 570)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$out/gpu.csv" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu,power.draw --format=csv,noheader -lms 500 >> "$out/gpu.csv" 2>&1 &
clocks=$!
timeout $(($(left) - 200)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | grep -v 'artificially reduced' > "$out/strata.log"
for sm in 0 1; do
  [ "$(left)" -gt 70 ] || break
  echo "== STRATA_SUBGROUP_MATRIX=$sm" >> "$out/prefill-ab.log"
  STRATA_SUBGROUP_MATRIX=$sm timeout $(($(left) - 40)) node dist/bench.mjs models --no-ops --config granite4h-350m-like,llama-400m --cases f16:1 --out "$out/ab-$sm.json" 2>&1 | grep -E 'prefill|decode|^\|' >> "$out/prefill-ab.log"
done
rm -f "$out"/ab-*.json
[ "$(left)" -gt 40 ] && timeout $(($(left) - 5)) node dist/bench.mjs profile llama-400m --storage f16 --rows 8 --context 192 --top 30 2>&1 | grep -v 'artificially reduced' > "$out/profile-b8.txt"
kill $clocks 2>/dev/null
echo "same-lease.sh: done in $(($(date +%s) - start)) s"
tail -40 "$out/strata.log"
