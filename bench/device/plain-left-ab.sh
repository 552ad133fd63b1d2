#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: prefill tiles reading their normed left operand from a buffer
# (STRATA_TILED_PLAIN_LEFT=1: a row kernel writes the normed rows once) against the default (the norm recomputed in
# every column tile's prologue): llama-400m and granite4h-350m-like at batch 1 alternated twice (the bench's
# 128-token prefill, median of nine), then llama-400m's 128-token prefill profile both ways.
# Usage: bash bench/device/plain-left-ab.sh OUT_DIR   (BUDGET s, default 420)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 420
mkdir -p "$out"
gpu_info "$out"
for round in 1 2; do
  for config in llama-400m granite4h-350m-like; do
    for plain in 0 1; do ab_env "$out" 90 STRATA_TILED_PLAIN_LEFT $plain $config; done
  done
done
for plain in 0 1; do
  [ "$(left)" -gt 30 ] || continue
  echo "== STRATA_TILED_PLAIN_LEFT=$plain llama-400m" >> "$out/profile-prefill.txt"
  STRATA_TILED_PLAIN_LEFT=$plain timeout $(($(left) - 5)) node dist/bench.mjs profile llama-400m --storage f16 --rows 1 --tokens 128 --top 12 2>&1 | quiet >> "$out/profile-prefill.txt"
done
echo "plain-left-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 1:' "$out/ab.log" | sed 's/decode.*//'; grep -E '^==|^tiled|^row|^element|summed' "$out/profile-prefill.txt"
