#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`, on the warm machine right after llama.cpp's call
# (run-llamacpp.sh, then llamacpp-depth.sh): the tiny model's reference generations batched (`bench greedy-batch`),
# the f16 table's Strata half (batch 1 and 8 of every configuration, 128-token prompt), then batch-1 decode of each
# configuration after a 4,000-token prompt with the GPU's default flash-decoding, beside llama.cpp's -d 4000.
# Usage: bash bench/device/final-table.sh OUT_DIR   (BUDGET s, default 560)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
gpu_info "$out"
greedy_checks "$out"
timeout $(($(left) - 170)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | quiet > "$out/strata.log"
gzip -9 "$out/strata.json"
for config in llama-400m granite4h-350m-like jamba-small; do
  [ "$(left)" -gt 40 ] || break
  echo "== $config f16:1 --prompt 4000" >> "$out/long-context.log"
  timeout $(($(left) - 10)) node dist/bench.mjs models --no-ops --config "$config" --cases f16:1 --prompt 4000 --out /tmp/lc.json 2>&1 | summary >> "$out/long-context.log"
done
echo "final-table.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E 'batch [18]:' "$out/strata.log"; grep -E '^==|decode' "$out/long-context.log"
