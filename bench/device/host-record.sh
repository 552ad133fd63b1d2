#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: `bench host-record` (a decode step's recording and submit over
# 96 submissions of 32 steps) for llama-400m and granite4h-350m-like, without and with a garbage collection after
# each round (node --expose-gc), alternated twice. Usage: bash bench/device/host-record.sh OUT_DIR (BUDGET s, default 300)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 300
mkdir -p "$out"
gpu_info "$out"
for round in 1 2; do
  for config in llama-400m granite4h-350m-like; do
    for gc in "" --gc; do
      [ "$(left)" -gt 30 ] || continue
      echo "== $config ${gc:-no gc}" >> "$out/host-record.log"
      timeout 60 node --expose-gc dist/bench.mjs host-record $config --steps 32 --rounds 12 $gc 2>&1 | quiet >> "$out/host-record.log"
    done
  done
done
echo "host-record.sh: done in $(($(date +%s) - start)) s"
cat "$out/host-record.log"
