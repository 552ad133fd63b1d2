#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: where a decode step's time goes at batch 1 and 8. Each run
# prints the pipelined step, the host's recording of one, Dawn's submit of one (its recording for the driver), the
# wall time of one in a submission of pre-recorded steps, and the GPU's own time of one by the pass's timestamps.
# llama-400m also with its 97-dispatch program (STRATA_ATTN_PROJECTION=1) and with Dawn's validation skipped.
# Usage: bash bench/device/host-split.sh OUT_DIR   (BUDGET s, default 400)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 400
mkdir -p "$out"
gpu_info "$out"
run() { # CONFIG CASES LABEL ENV...
  [ "$(left)" -gt 30 ] || return 0
  local config=$1 cases=$2 label=$3; shift 3
  echo "== $label $config $cases" >> "$out/split.log"
  env "$@" timeout 60 node dist/bench.mjs models --no-ops --config "$config" --cases "$cases" --out /tmp/split.json 2>&1 | summary >> "$out/split.log"
}
for round in 1 2; do
  run llama-400m f16:1 default STRATA_ATTN_PROJECTION=batched
  run llama-400m f16:1 projection STRATA_ATTN_PROJECTION=1
  run llama-400m f16:1 skip-validation STRATA_DAWN_TOGGLES=skip_validation
  run granite4h-350m-like f16:1 default STRATA_ATTN_PROJECTION=batched
  run jamba-small f16:1 default STRATA_ATTN_PROJECTION=batched
done
run llama-400m f16:8 default STRATA_ATTN_PROJECTION=batched
run granite4h-350m-like f16:8 default STRATA_ATTN_PROJECTION=batched
echo "host-split.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch [18]:' "$out/split.log"
