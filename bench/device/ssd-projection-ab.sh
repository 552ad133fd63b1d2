#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: granite4h-350m-like's batch-1 decode with the Mamba-2 step
# computing its in_proj rows (STRATA_SSD_PROJECTION=heads, 129 dispatches) in workgroups of 256 or 1024 threads
# (STRATA_SSD_THREADS), against the default program (157 dispatches), which runs first and last. Each run's profile
# gives the templates' times. Usage: bash bench/device/ssd-projection-ab.sh OUT_DIR   (BUDGET s, default 300)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 300
mkdir -p "$out"
gpu_info "$out"
G=granite4h-350m-like
ab_envs "$out" 40 $G
ab_envs "$out" 40 $G STRATA_SSD_PROJECTION=heads STRATA_SSD_THREADS=256
ab_envs "$out" 40 $G STRATA_SSD_PROJECTION=heads STRATA_SSD_THREADS=1024
ab_envs "$out" 40 $G
echo "ssd-projection-ab.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|batch 1|ssdstep' "$out/ab.log"
