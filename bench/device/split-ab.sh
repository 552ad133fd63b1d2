#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: decode attention over slices of the keys (flash-decoding,
# STRATA_ATTN_SPLITS) against one slice at long contexts: llama-400m batch 1 profiled after 1024 and 4096 positions
# with 0 (one slice, the attention computing its q/k/v), 8 and 16 slices. The profiles' step time by the pass's
# timestamps and their attention kernels are what to compare. Usage: bash bench/device/split-ab.sh OUT_DIR
# (BUDGET s, default 540)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 540
mkdir -p "$out"
gpu_info "$out"
for context in 1024 4096; do
  for splits in 0 8 16; do
    [ "$(left)" -gt 60 ] || break
    echo "== STRATA_ATTN_SPLITS=$splits llama-400m --context $context" >> "$out/profile.txt"
    STRATA_ATTN_SPLITS=$splits timeout $(($(left) - 10)) node dist/bench.mjs profile llama-400m --storage f16 --context $context --top 8 2>&1 | quiet >> "$out/profile.txt"
  done
done
echo "split-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|kernels,|attention' "$out/profile.txt"
