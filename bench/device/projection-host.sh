#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: llama-400m's batch-1 decode with separate q/k/v matvecs
# (121 dispatches, STRATA_ATTN_PROJECTION=batched, the default) against attention computing its own q/k/v (97,
# STRATA_ATTN_PROJECTION=1), alternated three times in one call: which wins when the host, not the GPU, bounds the
# step. Usage: bash bench/device/projection-host.sh OUT_DIR   (BUDGET s, default 240)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 240
mkdir -p "$out"
gpu_info "$out"
for round in 1 2 3; do
  for mode in batched 1; do ab_env "$out" 40 STRATA_ATTN_PROJECTION $mode llama-400m; done
done
echo "projection-host.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 1' "$out/ab.log"
