#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`, before llama.cpp's call: the decode attention computing its
# q/k/v at batch 1 too (the GPU default since this script). The tiny model's reference generations batched
# (`bench greedy-batch`: the GPU's kernels checked), batch-1 decode of llama-400m and granite4h-350m-like with the
# old default (STRATA_ATTN_PROJECTION=batched) and the new one alternated twice, then the f16 table's Strata half.
# Usage: bash bench/device/projection-default.sh OUT_DIR   (BUDGET s, default 570)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
gpu_info "$out"
greedy_checks "$out"
for round in 1 2; do
  for config in llama-400m granite4h-350m-like; do
    for mode in batched 1; do ab_env "$out" 330 STRATA_ATTN_PROJECTION $mode $config; done
  done
done
table_f16 "$out"
echo "projection-default.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E '^==|batch 1:' "$out/ab.log"; grep -E 'batch [18]:' "$out/strata.log"
