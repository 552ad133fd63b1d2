#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`, right before llama.cpp's call: the generator's ramp of
# submissions (short ones first from an idle GPU, runtime/generator.ts rampSteps) against the build before it
# (dist/bench-old.mjs: 32 steps a submission from the first), batch 1 of each configuration alternated twice; the
# tiny model's reference generations batched (`bench greedy-batch`); then the f16 table's Strata half.
# Usage: bash bench/device/ramp-table.sh OUT_DIR   (BUDGET s, default 570)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
gpu_info "$out"
gzip -dc dist/bench-old.mjs.gz > dist/bench-old.mjs
greedy_checks "$out"
for round in 1 2; do
  for config in llama-400m granite4h-350m-like jamba-small; do
    for bundle in dist/bench-old.mjs dist/bench.mjs; do ab_run "$out" 300 $bundle $config; done
  done
done
table_f16 "$out"
echo "ramp-table.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E '^==|batch 1:' "$out/ab.log"; grep -E 'batch [18]:' "$out/strata.log"
