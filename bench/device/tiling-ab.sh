#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`, before llama.cpp's call: the subgroup matrix kernels' tilings
# at the prefill shapes (`bench tiled`: time and distance from the f32 kernel), 128-token prefill at batch 1 from two
# bundles alternated (dist/bench-base.mjs against dist/bench.mjs) for the configurations whose programs differ, the
# tiny model's reference generations batched (`bench greedy-batch`), the f16 table's Strata half, llama-400m with q8
# and q4 weights at batch 1 and 8, and llama-400m's prefill profile.
# Needs dist/bench.mjs and dist/bench-base.mjs. 6 files in OUT_DIR.
# Usage: bash bench/device/tiling-ab.sh OUT_DIR [CONFIG...]   (BUDGET s, default 570; configs default llama-400m jamba-small)
set -u
out=$1; shift
configs=${*:-llama-400m jamba-small}
source "$(dirname "$0")/budget.sh" 570
mkdir -p "$out"
gpu_info "$out"
timeout 150 node dist/bench.mjs tiled 2>&1 | quiet > "$out/tiled.txt"
greedy_checks "$out"
for round in 1 2; do for config in $configs; do ab_run "$out" 240 dist/bench-base.mjs $config; ab_run "$out" 240 dist/bench.mjs $config; done; done
timeout $(($(left) - 90)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | quiet > "$out/strata.log"
gzip -9 "$out/strata.json"
[ "$(left)" -gt 60 ] && timeout $(($(left) - 30)) node dist/bench.mjs models --no-ops --config llama-400m --cases q8:1,q8:8,q4:1,q4:8 --out /tmp/q.json 2>&1 | summary > "$out/quant.log"
prefill_profiles "$out" 24 llama-400m
echo "tiling-ab.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E 'gate/up|down' "$out/tiled.txt"; grep -E '^==|batch 1:' "$out/ab.log"; grep -E 'batch [18]:' "$out/strata.log" "$out/quant.log"
