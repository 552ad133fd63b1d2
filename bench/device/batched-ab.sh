#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: two batched-decode switches timed both ways in one call,
# alternated. llama-400m f16 batch 8 with the attention computing its own q/k/v rows (the default in batched buckets)
# against separate q/k/v projections on tiles (STRATA_ATTN_PROJECTION=0); then q8 and q4 batch 8 with block-quantized
# weights on the tiled rows kernel (STRATA_TILED_ROWS_QUANT=1) against the matvec. Needs dist/bench.mjs. 2 files.
# Usage: bash bench/device/batched-ab.sh OUT_DIR   (BUDGET s, default 560)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
run() {
  local log=$1 cases=$2 setting=$3 need=$4
  [ "$(left)" -gt "$need" ] || return
  echo "== $cases $setting" >> "$out/$log"
  ( [ "$setting" = default ] || export $setting; timeout $(($(left) - 10)) node dist/bench.mjs models --no-ops --config llama-400m --cases "$cases" --out /tmp/ab.json 2>&1 | summary >> "$out/$log" )
}
for setting in ${ATTN_ROUNDS:-default STRATA_ATTN_PROJECTION=0 default STRATA_ATTN_PROJECTION=0}; do run attn-b8.log f16:8 "$setting" 40; done
for setting in STRATA_TILED_ROWS_QUANT=1 default; do run quant-b8.log q8:8,q4:8 "$setting" 120; done
echo "batched-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 8:' "$out"/*.log
