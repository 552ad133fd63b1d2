#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: batch-1 decode with the one-row matvecs loading their weight
# words ahead of their norm phases (STRATA_MATVEC_PRELOAD=1) against the default, one bundle (dist/bench.mjs),
# alternated twice, then granite4h-350m-like's batch-1 step per kernel both ways. Why: a batch-1 matvec with a norm
# prologue waits on the norm's reduction and its barriers before its first weight load; 89 of granite4h's 157 kernels
# have one.
# Usage: bash bench/device/preload-ab.sh OUT_DIR [CONFIG...]   (BUDGET s, default 560)
set -u
out=$1; shift
configs=${*:-granite4h-350m-like llama-400m jamba-small}
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
gpu_info "$out"
# the tiny model's reference generations decoded one at a time (the batch-1 kernels), both ways
for preload in 0 1; do
  echo "== STRATA_MATVEC_PRELOAD=$preload" >> "$out/checks.txt"
  STRATA_MATVEC_PRELOAD=$preload timeout 60 node dist/bench.mjs greedy-batch assets/models/tiny-granite-code --alone 2>&1 | quiet >> "$out/checks.txt"
done
for round in 1 2; do
  for config in $configs; do
    ab_envs "$out" 40 "$config"
    ab_envs "$out" 40 "$config" STRATA_MATVEC_PRELOAD=1
  done
done
for preload in 0 1; do
  [ "$(left)" -gt 40 ] || break
  echo "== STRATA_MATVEC_PRELOAD=$preload" >> "$out/profile-granite-b1.txt"
  STRATA_MATVEC_PRELOAD=$preload timeout $(($(left) - 5)) node dist/bench.mjs profile granite4h-350m-like --storage f16 --top 12 2>&1 | quiet >> "$out/profile-granite-b1.txt"
done
echo "preload-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 1:' "$out/ab.log"
