#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: decode at a long context, each bench configuration at batch 1
# (16-bit weights) after a 4,000-token prompt, with the GPU's default flash-decoding (8 key slices where a cache holds
# more than 512 keys) and with one slice (STRATA_ATTN_SPLITS=0), alternating. Summary lines into OUT_DIR/ab.log, each
# run's report into OUT_DIR/<config>-<splits>.json. llamacpp-depth.sh times llama.cpp at the same depth.
# Usage: bash bench/device/long-context.sh OUT_DIR (BUDGET s, default 540; CONFIGS, default all three; CASES, default
# f16:1)
set -u
out=$1
source "$(dirname "$0")/budget.sh" 540
mkdir -p "$out"
gpu_info "$out"
for config in ${CONFIGS:-llama-400m granite4h-350m-like jamba-small}; do
  for splits in default 0; do
    [ "$(left)" -gt 60 ] || break 2
    echo "== STRATA_ATTN_SPLITS=$splits $config ${CASES:-f16:1} --prompt 4000" >> "$out/ab.log"
    if [ "$splits" = default ]; then set -- env -u STRATA_ATTN_SPLITS; else set -- env STRATA_ATTN_SPLITS=0; fi
    "$@" timeout $(($(left) - 10)) node dist/bench.mjs models --no-ops --config "$config" --cases "${CASES:-f16:1}" --prompt 4000 --out "$out/$config-$splits.json" 2>&1 | summary >> "$out/ab.log"
  done
done
echo "long-context.sh: done in $(($(date +%s) - start)) s"
grep -E '^==|decode' "$out/ab.log"
