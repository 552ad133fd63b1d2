#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: batched decode rows on the tiled kernel (subgroup matrices,
# DeviceLimits.tiledRows) against the matvec (STRATA_TILED_ROWS=0). tiny-granite-code's three reference generations
# decoded together (greedy-batch: ids against transformers'), then the f16 batch-8 bench of every configuration,
# both ways, alternated. Needs dist/bench.mjs and dist/tgc (a copy of the tiny model). 3 files in OUT_DIR.
# Usage: bash bench/device/rows-check.sh OUT_DIR   (BUDGET s, default 560)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
for r in default 0; do
  echo "== STRATA_TILED_ROWS=$r" >> "$out/greedy.txt"
  ( [ $r = default ] || export STRATA_TILED_ROWS=$r; timeout 120 node dist/bench.mjs greedy-batch dist/tgc 2>&1 | grep -v 'artificially reduced' >> "$out/greedy.txt" )
done
for r in default 0 default 0; do
  [ "$(left)" -gt 100 ] || break
  echo "== STRATA_TILED_ROWS=$r" >> "$out/b8.log"
  ( [ $r = default ] || export STRATA_TILED_ROWS=$r; timeout $(($(left) - 20)) node dist/bench.mjs models --no-ops --cases f16:8 --out "$out/b8-$r.json" 2>&1 | grep -v 'artificially reduced' >> "$out/b8.log" )
done
tar czf "$out/b8-json.tar.gz" -C "$out" $(cd "$out" && ls b8-*.json) && rm -f "$out"/b8-*.json
echo "rows-check.sh: done in $(($(date +%s) - start)) s"
cat "$out/greedy.txt"; grep -E '^== |batch 8:' "$out/b8.log"
