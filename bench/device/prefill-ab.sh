#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`, before llama.cpp's call: the GPU checks of the tiled kernels
# the suite cannot run there (tiny-granite-code's reference generations batched, `bench greedy-batch`; the tiled rows'
# env-parity, tiles-parity.sh), the f16 table's Strata half (batch 1 and 8, every configuration), batch 1 of every
# configuration from two bundles alternated (dist/bench-base.mjs, the commit before the change, against
# dist/bench.mjs), and 128-token prefill profiles of llama-400m and granite4h-350m-like.
# Needs dist/bench.mjs and dist/bench-base.mjs. 6 files in OUT_DIR.
# Usage: bash bench/device/prefill-ab.sh OUT_DIR   (BUDGET s, default 570)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
gpu_info "$out"
model=assets/models/tiny-granite-code
timeout 120 node dist/bench.mjs greedy-batch $model 2>&1 | quiet > "$out/checks.txt"
timeout $(($(left) - 300)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | quiet > "$out/strata.log"
gzip -9 "$out/strata.json"
for config in llama-400m granite4h-350m-like jamba-small; do
  ab_run "$out" 150 dist/bench-base.mjs $config
  ab_run "$out" 150 dist/bench.mjs $config
done
for args in "--env STRATA_TILED_ROWS_QUANT=0,1 --weights q8" "--env STRATA_TILED_ROWS_QUANT=0,1 --weights q4"; do
  [ "$(left)" -gt 90 ] || break
  timeout 80 node dist/bench.mjs env-parity $model $args 2>&1 | quiet >> "$out/checks.txt"
  echo "env-parity exit ${PIPESTATUS[0]}" >> "$out/checks.txt"
done
prefill_profiles "$out" 16 llama-400m granite4h-350m-like
echo "prefill-ab.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E 'batch 1:|batch 8:' "$out/strata.log" | head -20; grep -E '^==|batch 1:' "$out/ab.log"
