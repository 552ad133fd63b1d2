#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: the parity of batched decode rows on tiles (subgroup matrices,
# which the suite cannot run on lavapipe). tiny-granite-code's reference prompts decoded together, teacher-forced,
# with the tiled rows and with the matvec (`bench env-parity`: max logit difference, tolerance 0.05): f16 weights
# (STRATA_TILED_ROWS=0,2), then q8 and q4 (STRATA_TILED_ROWS_QUANT=0,1, the switch that is off until this passes).
# Needs dist/bench.mjs. 1 file in OUT_DIR; exits non-zero when a check fails.
# Usage: bash bench/device/tiles-parity.sh OUT_DIR
set -u
out=$1
mkdir -p "$out"
model=assets/models/tiny-granite-code
status=0
check() { timeout 300 node dist/bench.mjs env-parity $model "$@" 2>&1 | grep -v 'artificially reduced' | tee -a "$out/parity.txt"; [ "${PIPESTATUS[0]}" = 0 ] || status=1; }
check --env STRATA_TILED_ROWS=0,2
check --env STRATA_TILED_ROWS_QUANT=0,1 --weights q8
check --env STRATA_TILED_ROWS_QUANT=0,1 --weights q4
exit $status
