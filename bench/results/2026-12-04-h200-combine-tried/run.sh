#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: flash-decoding's combine in the output projection's prologue
# (dist/bench.mjs, 25efad6 with combine-in-prologue.patch) against its own kernel (dist/bench-base.mjs, 25efad6). The tiny model's reference
# generations batched with 4 key slices at every length and their logits against one slice (the fused combine
# checked on the GPU), then batch-1 (and batch-2) decode after a 4,000-token prompt from the two bundles alternated,
# one slice once, batch 4 with one and 8 slices, and the step times of llama-400m's profile with 0 and 8 slices after 128 to 1,024 positions in
# caches of 4,224 (where splitting starts to pay). Summary lines into OUT_DIR/ab.log, profiles into OUT_DIR/profile.txt.
# Kept as the record of the call (it was bench/device/combine-ab.sh then). Usage: bash run.sh OUT_DIR (BUDGET s, default 560)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 560
mkdir -p "$out"
gpu_info "$out"
STRATA_ATTN_SPLITS=4 timeout 60 node dist/bench.mjs greedy-batch assets/models/tiny-granite-code 2>&1 | quiet > "$out/checks.txt"
timeout 90 node dist/bench.mjs env-parity assets/models/tiny-granite-code --env STRATA_ATTN_SPLITS=0,4 2>&1 | quiet >> "$out/checks.txt"
long() {
  local bundle=$1 config=$2 cases=$3
  [ "$(left)" -gt 200 ] || return 0
  echo "== $bundle $config $cases --prompt 4000" >> "$out/ab.log"
  timeout 90 node "$bundle" models --no-ops --config "$config" --cases "$cases" --prompt 4000 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log"
}
for round in 1 2; do
  long dist/bench-base.mjs llama-400m f16:1; long dist/bench.mjs llama-400m f16:1
  long dist/bench-base.mjs llama-400m f16:2; long dist/bench.mjs llama-400m f16:2
done
for config in granite4h-350m-like jamba-small; do long dist/bench-base.mjs $config f16:1; long dist/bench.mjs $config f16:1; done
# one slice at batch 1; batch 4 (the default's one slice) against 8 slices forced
for run in 0:f16:1 default:f16:4 8:f16:4; do
  IFS=: read -r splits cases <<< "$run"
  [ "$(left)" -gt 120 ] || break
  echo "== STRATA_ATTN_SPLITS=$splits llama-400m $cases --prompt 4000" >> "$out/ab.log"
  if [ "$splits" = default ]; then set -- env -u STRATA_ATTN_SPLITS; else set -- env STRATA_ATTN_SPLITS=$splits; fi
  "$@" timeout 90 node dist/bench.mjs models --no-ops --config llama-400m --cases "$cases" --prompt 4000 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log"
done
for context in 128 256 512 1024; do for splits in 0 8; do
  [ "$(left)" -gt 30 ] || break 2
  echo "== STRATA_ATTN_SPLITS=$splits llama-400m --context $context --capacity 4224" >> "$out/profile.txt"
  STRATA_ATTN_SPLITS=$splits timeout $(($(left) - 10)) node dist/bench.mjs profile llama-400m --storage f16 --context "$context" --capacity 4224 --top 4 2>&1 | quiet >> "$out/profile.txt"
done; done
echo "combine-ab.sh: done in $(($(date +%s) - start)) s"
cat "$out/checks.txt"; grep -E '^==|decode' "$out/ab.log"; grep -E '^==|warm run|kernels,' "$out/profile.txt"
