#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: batch-1 decode with Dawn's validation skipped
# (STRATA_DAWN_TOGGLES=skip_validation; with disable_robustness too for llama-400m) against the default, one bundle
# (dist/bench.mjs), alternated twice. Why: a batch-1 step's host work (recording ~121-161 dispatches, then Dawn
# recording them for Vulkan at submit) is of the order of the GPU's time, and a run where the host records a step
# in 0.7-0.9 ms instead of 0.35 decodes 20-30% slower.
# Usage: bash bench/device/toggles-ab.sh OUT_DIR [CONFIG...]   (BUDGET s, default 560)
set -u
out=$1; shift
configs=${*:-llama-400m granite4h-350m-like}
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
gpu_info "$out"
run() { # CONFIG LABEL [TOGGLES]
  [ "$(left)" -gt 40 ] || return 0
  echo "== $2 $1" >> "$out/ab.log"
  env ${3:+STRATA_DAWN_TOGGLES=$3} timeout 60 node dist/bench.mjs models --no-ops --config "$1" --cases f16:1 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log"
}
for round in 1 2; do
  for config in $configs; do
    run $config default
    run $config skip-validation skip_validation
  done
  run llama-400m skip-validation+no-robustness skip_validation,disable_robustness
done
echo "toggles-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 1:' "$out/ab.log"
