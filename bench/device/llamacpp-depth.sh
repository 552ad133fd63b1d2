#!/usr/bin/env bash
# On the GPU machine, after .peers/run-llamacpp.sh has built llama.cpp and converted the bench configurations (the
# same warm machine): llama-bench's decode of 128 tokens after 4,000 positions (-d 4000, its default flash attention)
# for each configuration at 16-bit weights, beside long-context.sh. Usage: bash bench/device/llamacpp-depth.sh OUT_DIR
set -u
out=$1
mkdir -p "$out"
B=/tmp/lcpp-slim/build/bin
for n in llama-400m granite4h-350m-like jamba-small; do
  timeout 120 $B/llama-bench -m /tmp/m/$n-f16.gguf -p 0 -n 128 -d 4000 -ngl 99 -r 3 -o jsonl 2>>"$out/llama-bench-depth.err" | sed "s/^{/{\"tag\":\"$n-f16-d4000\",/" >> "$out/llama-bench-depth.jsonl"
done
python3 - "$out/llama-bench-depth.jsonl" <<'EOP'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); print(d.get('tag'), 'depth', d.get('n_depth'), 'flash_attn', d.get('flash_attn'), 'decode', round(d.get('avg_ts', 0), 1), 'tok/s')
EOP
