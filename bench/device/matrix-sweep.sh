#!/usr/bin/env bash
# One device call: the subgroup matrix kernel's tilings (STRATA_MATRIX_TILE=tm,tn,slices,tk) in the 128-token
# prefill of llama-400m and granite4h-350m-like (summed kernel time and the tiled kernels' share), against the f32
# tiled kernels (STRATA_SUBGROUP_MATRIX=0); tiny-granite-code greedy tokens both ways (matrix-generate.sh); bench
# tiled; which subgroupMatrixLoad form this Dawn takes. Needs dist/bench.mjs, dist/strata.mjs and dist/tgc. Output under $1.
out=$1; mkdir -p "$out"
node bench/device/sm-form.mjs > "$out/form.txt" 2>&1
bash bench/device/matrix-generate.sh "$out"
for model in llama-400m granite4h-350m-like; do
  for tile in off default 64,64,1,64 32,64,2,32 32,32,4,32 16,32,8,32 16,16,8,32 32,32,8,16; do
    env=(); [ $tile = off ] && env=(STRATA_SUBGROUP_MATRIX=0); [ $tile != off ] && [ $tile != default ] && env=(STRATA_MATRIX_TILE=$tile)
    echo "== $model $tile"
    env "${env[@]}" timeout 60 node dist/bench.mjs profile $model --tokens 128 --top 4 2>/dev/null | grep -E "summed|^tiled|^map|k[0-9]+_tiled"
  done
done > "$out/sweep.txt" 2>&1
timeout 120 node dist/bench.mjs tiled 2>/dev/null | grep -v "^\s" > "$out/tiled.txt"
