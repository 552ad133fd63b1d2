#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: decode attention over slices of the keys (STRATA_ATTN_SPLITS,
# the slices sharing each row's live keys) in caches of 4,224 positions (a long-context session's) at short and long
# contexts: batch-1 profiles, each run CONFIG:SLICES:CONTEXT of RUNS (default: llama-400m with 0, 4 and 8 slices after
# 128, 1024 and 4000 positions, 0 and 8 after 128 again, granite4h-350m-like and jamba-small with 0 and 8 after 128 and
# 4000). The warm run (20 steps in one submission) is the step time to compare.
# Usage: bash bench/device/split-capacity.sh OUT_DIR (BUDGET s, default 540; RUNS)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 540
mkdir -p "$out"
gpu_info "$out"
default=""
for context in 128 1024 4000; do for splits in 0 4 8; do default+=" llama-400m:$splits:$context"; done; done
default+=" llama-400m:0:128 llama-400m:8:128"
for config in granite4h-350m-like jamba-small; do for context in 128 4000; do for splits in 0 8; do default+=" $config:$splits:$context"; done; done; done
for run in ${RUNS:-$default}; do
  IFS=: read -r config splits context <<< "$run"
  [ "$(left)" -gt 40 ] || break
  echo "== STRATA_ATTN_SPLITS=$splits $config --context $context --capacity 4224" >> "$out/profile.txt"
  STRATA_ATTN_SPLITS=$splits timeout $(($(left) - 10)) node dist/bench.mjs profile "$config" --storage f16 --context "$context" --capacity 4224 --top 6 2>&1 | quiet >> "$out/profile.txt"
done
echo "split-capacity.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|warm run|kernels,' "$out/profile.txt"
