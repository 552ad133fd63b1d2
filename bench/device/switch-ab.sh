#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: batch-1 decode with a 0/1 switch on against off, one bundle
# (dist/bench.mjs): tiny-granite-code's reference generations decoded one at a time both ways and batched with it
# on (checks.txt: the GPU's kernels checked), then the configurations alternated twice (ab.log), then
# granite4h-350m-like's batch-1 step per kernel both ways (profile-granite-b1.txt). Used for
# STRATA_MATVEC_PRELOAD (bench/results/2026-12-04-h200-preload/) and STRATA_MLP_FUSION (-mlp-fusion/).
# Usage: bash bench/device/switch-ab.sh VAR OUT_DIR [CONFIG...]   (BUDGET s, default 560)
set -u
var=$1 out=$2; shift 2
configs=${*:-granite4h-350m-like llama-400m jamba-small}
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
gpu_info "$out"
for on in 0 1; do
  echo "== $var=$on" >> "$out/checks.txt"
  env "$var=$on" timeout 60 node dist/bench.mjs greedy-batch assets/models/tiny-granite-code --alone 2>&1 | quiet >> "$out/checks.txt"
done
echo "== $var=1, batched" >> "$out/checks.txt"
env "$var=1" timeout 60 node dist/bench.mjs greedy-batch assets/models/tiny-granite-code 2>&1 | quiet >> "$out/checks.txt"
for round in 1 2; do
  for config in $configs; do
    ab_envs "$out" 40 "$config" "$var=0"
    ab_envs "$out" 40 "$config" "$var=1"
  done
done
for on in 0 1; do
  [ "$(left)" -gt 40 ] || break
  echo "== $var=$on" >> "$out/profile-granite-b1.txt"
  env "$var=$on" timeout $(($(left) - 5)) node dist/bench.mjs profile granite4h-350m-like --storage f16 --top 12 2>&1 | quiet >> "$out/profile-granite-b1.txt"
done
echo "switch-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 1:' "$out/ab.log"
