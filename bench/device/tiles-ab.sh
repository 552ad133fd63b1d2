#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: the prefill attention's tile (STRATA_ATTN_TILES=rows,keys,
# compiler/lower/attentionPrefillKernel.ts) swept over six shapes, the 128-token prefill of llama-400m and jamba-small
# at batch 1 twice over (ab.log), and llama-400m's prefill profile by template once a shape (profile.txt).
# Usage: bash bench/device/tiles-ab.sh OUT_DIR   (BUDGET s, default 500; about 3.5 minutes)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 500
mkdir -p "$out"
gpu_info "$out"
for round in 1 2; do
for t in default 8,64 4,64 16,32 8,32 32,16; do
  [ "$(left)" -gt 40 ] || break 2
  if [ "$t" = default ]; then set -- env -u STRATA_ATTN_TILES; else set -- env STRATA_ATTN_TILES=$t; fi
  for c in llama-400m jamba-small; do
    echo "== STRATA_ATTN_TILES=$t $c" >> "$out/ab.log"
    "$@" timeout 60 node dist/bench.mjs models --no-ops --config $c --cases f16:1 --out /tmp/ab.json 2>&1 | summary | grep prefill | sed 's/, decode.*//' >> "$out/ab.log"
  done
  if [ $round = 1 ]; then
    echo "== STRATA_ATTN_TILES=$t" >> "$out/profile.txt"
    "$@" timeout 60 node dist/bench.mjs profile llama-400m --storage f16 --rows 1 --tokens 128 --top 2 2>&1 | quiet | grep -E "^attention|warm run|^tiled |^row " >> "$out/profile.txt"
  fi
done
done
cat "$out/ab.log"; cat "$out/profile.txt"
