#!/usr/bin/env bash
# On the GPU machine, after .peers/run-llamacpp.sh in the same lease (it leaves the CUDA build in /tmp/lcpp-slim and
# the bench configurations' f16 GGUF files in /tmp/m): llama.cpp's own Q8_0 and Q4_0 of the same configurations,
# made by llama-quantize, benched by llama-bench (prompt 128, 128 new tokens) beside Strata's q8/q4.
# Usage: bash bench/device/llamacpp-quant.sh CONFIGS_JSON OUT_DIR
set -u
configs=$1; out=$2; mkdir -p "$out"
ninja -C /tmp/lcpp-slim/build llama-quantize > /tmp/ninja-quant.log 2>&1 || { tail -5 /tmp/ninja-quant.log; exit 1; }
B=/tmp/lcpp-slim/build/bin
for n in $(python3 -c "import json; print(' '.join(json.load(open('$configs'))))"); do for q in q8_0 q4_0; do
  [ -f /tmp/m/$n-$q.gguf ] || $B/llama-quantize /tmp/m/$n-f16.gguf /tmp/m/$n-$q.gguf $q > /tmp/quant-$n-$q.log 2>&1
  $B/llama-bench -m /tmp/m/$n-$q.gguf -p 128 -n 128 -ngl 99 -r 3 -o jsonl 2>>"$out/llama-bench-quant.err" | sed "s/^{/{\"tag\":\"$n-$q\",/" >> "$out/llama-bench-quant.jsonl"
done; done
ls -la /tmp/m/*.gguf | awk '{print $5, $9}' > "$out/gguf-sizes.txt"
python3 - "$out/llama-bench-quant.jsonl" <<'EOP'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); print(d.get('tag'), 'prompt' if d.get('n_prompt') else 'decode', round(d.get('avg_ts', 0), 1), 'tok/s')
EOP
