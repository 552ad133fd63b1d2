#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh` and right after llama.cpp's call: the f16 table's Strata half
# (batch 1 and 8, every configuration), then batch-1 decode with the kernels that compute their own projections
# against the separate matvecs, alternated in one call: llama-400m with and without the attention projection
# (STRATA_ATTN_PROJECTION), granite4h-350m-like with and without the in_proj rows inside the Mamba-2 step
# (STRATA_SSD_PROJECTION=heads|1) and the attention projection; then per-kernel profiles of both granite programs.
# Needs dist/bench.mjs. 5 files in OUT_DIR.
# Usage: bash bench/device/projection-ab.sh OUT_DIR   (BUDGET s, default 570)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
gpu_info "$out"
timeout $(($(left) - 330)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | quiet > "$out/strata.log"
# one bench run of CONFIG at batch 1 under the settings (space-separated NAME=VALUE, or 'default')
run() {
  local config=$1 setting=$2
  [ "$(left)" -gt 60 ] || return
  echo "== $config $setting" >> "$out/ab.log"
  ( [ "$setting" = default ] || export $setting; timeout $(($(left) - 30)) node dist/bench.mjs models --no-ops --config "$config" --cases f16:1 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log" )
}
for round in 1 2; do
  run llama-400m default
  run llama-400m STRATA_ATTN_PROJECTION=1
  run granite4h-350m-like default
  run granite4h-350m-like "STRATA_SSD_PROJECTION=heads STRATA_ATTN_PROJECTION=1"
  [ $round = 1 ] && run granite4h-350m-like "STRATA_SSD_PROJECTION=1 STRATA_ATTN_PROJECTION=1"
done
for setting in default "STRATA_SSD_PROJECTION=heads STRATA_ATTN_PROJECTION=1"; do
  [ "$(left)" -gt 45 ] || break
  echo "== $setting" >> "$out/profile-granite-b1.txt"
  ( [ "$setting" = default ] || export $setting; timeout $(($(left) - 10)) node dist/bench.mjs profile granite4h-350m-like --storage f16 --rows 1 --context 192 --top 12 2>&1 | quiet >> "$out/profile-granite-b1.txt" )
done
echo "projection-ab.sh: done in $(($(date +%s) - start)) s"
grep -E 'batch 1:|batch 8:' "$out/strata.log" | head -20; cat "$out/ab.log"
