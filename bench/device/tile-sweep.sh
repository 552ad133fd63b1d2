#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: measurement knobs of one bundle (dist/bench.mjs), read when a
# process creates its device. (1) The 128-token prefill's tiled kernels: loads two K steps ahead
# (STRATA_TILED_AHEAD=2) and fixed subgroup matrix tilings (STRATA_MATRIX_TILE=tm,tn,slices,tk), per-kernel profiles
# of granite4h-350m-like and llama-400m. (2) The whole prefill, STRATA_TILED_AHEAD 1 against 2, alternated twice.
# (3) llama-400m's batch-1 decode with the attention computing its own q/k/v rows (STRATA_ATTN_PROJECTION=1, 97
# dispatches) at the decode attention's default 256 threads and at 512, against the default program (121).
# Usage: bash bench/device/tile-sweep.sh OUT_DIR   (BUDGET s, default 560)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
gpu_info "$out"
profile() { # LABEL CONFIG ENV...
  [ "$(left)" -gt 330 ] || return 0
  local label=$1 config=$2; shift 2
  echo "== $label $config" >> "$out/profile-prefill.txt"
  env "$@" timeout 60 node dist/bench.mjs profile "$config" --storage f16 --rows 1 --tokens 128 --top 8 2>&1 | quiet >> "$out/profile-prefill.txt"
}
for config in granite4h-350m-like llama-400m; do
  profile default $config STRATA_TILED_AHEAD=1
  profile ahead2 $config STRATA_TILED_AHEAD=2
  profile tile-32-32-4-64 $config STRATA_MATRIX_TILE=32,32,4,64
  profile ahead2-tile-32-32-4-64 $config STRATA_TILED_AHEAD=2 STRATA_MATRIX_TILE=32,32,4,64
done
run() { # LOG CONFIG LABEL ENV...
  [ "$(left)" -gt 40 ] || return 0
  local log=$1 config=$2 label=$3; shift 3
  echo "== $label $config" >> "$out/$log"
  env "$@" timeout 60 node dist/bench.mjs models --no-ops --config "$config" --cases f16:1 --out /tmp/ab.json 2>&1 | summary >> "$out/$log"
}
for round in 1 2; do
  for config in granite4h-350m-like llama-400m; do
    run prefill-ab.log $config ahead1 STRATA_TILED_AHEAD=1
    run prefill-ab.log $config ahead2 STRATA_TILED_AHEAD=2
  done
done
for round in 1 2; do
  run decode-ab.log llama-400m default STRATA_ATTN_PROJECTION=batched
  run decode-ab.log llama-400m projection STRATA_ATTN_PROJECTION=1
  run decode-ab.log llama-400m projection-wg512 STRATA_ATTN_PROJECTION=1 STRATA_ATTN_DECODE=sector:wg=512
done
echo "tile-sweep.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|kernels,|^tiled ' "$out/profile-prefill.txt"; grep -hE '^==|batch 1:|dispatches' "$out"/*-ab.log
