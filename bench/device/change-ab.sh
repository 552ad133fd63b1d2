#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`, before llama.cpp's call: a prefill change measured. The tiny
# model's reference generations batched (`bench greedy-batch`: the GPU's kernels checked), 128-token prefill at batch 1
# from two bundles alternated twice (dist/bench-base.mjs, the commit before the change, against dist/bench.mjs), the
# f16 table's Strata half, and the 128-token prefill profiles of llama-400m and granite4h-350m-like.
# Needs dist/bench.mjs and dist/bench-base.mjs. 5 files in OUT_DIR.
# Usage: bash bench/device/change-ab.sh OUT_DIR [CONFIG...]   (BUDGET s, default 570; configs default all three)
set -u
out=$1; shift
configs=${*:-llama-400m granite4h-350m-like jamba-small}
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
gpu_info "$out"
greedy_checks "$out"
for round in 1 2; do for config in $configs; do ab_run "$out" 300 dist/bench-base.mjs $config; ab_run "$out" 300 dist/bench.mjs $config; done; done
timeout $(($(left) - 80)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | quiet > "$out/strata.log"
gzip -9 "$out/strata.json"
prefill_profiles "$out" 16 llama-400m granite4h-350m-like
echo "change-ab.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E '^==|batch 1:' "$out/ab.log"; grep -E 'batch [18]:' "$out/strata.log"
