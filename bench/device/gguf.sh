#!/usr/bin/env bash
# On the GPU machine (it has torch, transformers and llama.cpp's converter needs): GGUF test files made by
# llama.cpp's own converter and llama-quantize, for Strata's GGUF loader tests.
#   - tiny-granite-code (the bundled model) in f32, f16, bf16, q8_0 (converter) and q4_0, q4_K (llama-quantize)
#   - bench/device/gguf-configs.json: small random-weight models (seed 0) of the bench families with the
#     tiny-granite-code tokenizer, their HF folders (safetensors) beside their GGUF files, so a test can compare
# llama-quantize is built CPU-only (quantizing needs no GPU; the build takes about a minute on 16 cores).
# Usage: bash bench/device/gguf.sh OUT_DIR      (needs .peers/ from prepare.sh; ONLY="name ..." makes only those
#   configurations of gguf-configs.json, in f16 and q8_0, without tiny-granite-code and llama-quantize)
set -u
out=$1; mkdir -p "$out"; root=$(pwd); tok=$root/assets/models/tiny-granite-code
[ -d /tmp/lcpp-slim ] || tar xJf .peers/llama.cpp-src.tar.xz -C /tmp
( cd /tmp/lcpp-slim && cmake -B build-cpu -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > /tmp/cmake-cpu.log 2>&1 \
  && cmake --build build-cpu -j 16 --target llama-quantize > /tmp/build-cpu.log 2>&1 ) &
build=$!
convert() { # hf_dir name outtype
  # Qwen3-Next's converter expects multi-token-prediction layers unless told there are none
  LLAMA_CPP_DIR=/tmp/lcpp-slim python3 .peers/convert_wrap.py "$1" --outtype "$3" --outfile "$out/$2-$3.gguf" $(case $2 in qwen3_next*) echo --no-mtp;; esac) > "$out/$2-$3.log" 2>&1
  echo "{\"model\":\"$2\",\"outtype\":\"$3\",\"rc\":$?}" >> "$out/convert.jsonl"
}
[ -n "${ONLY:-}" ] || for t in f32 f16 bf16 q8_0; do convert "$tok" tiny-granite-code $t; done
python3 - "$root/bench/device/gguf-configs.json" "$tok" "$out/hf" "${ONLY:-}" <<'EOP'
import json, os, shutil, sys, torch, transformers as tf
cfgs, tokdir, out, only = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4].split()
for name, c in cfgs.items():
    if only and name not in only: continue
    d = os.path.join(out, name); torch.manual_seed(0)
    m = tf.AutoModelForCausalLM.from_config(tf.AutoConfig.for_model(**c), torch_dtype=torch.float32)
    m.save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"): shutil.copy(os.path.join(tokdir, f), d)
    print(name, sum(p.numel() for p in m.parameters()), flush=True)
EOP
for d in "$out"/hf/*/; do n=$(basename "$d"); for t in f32 f16 q8_0; do convert "$d" "$n" $t; done; done
if [ -n "${ONLY:-}" ]; then kill $build 2>/dev/null; rm -f "$out"/*-f32.gguf; cat "$out/convert.jsonl"; tail -n 5 "$out"/*.log; exit 0; fi
wait $build; Q=/tmp/lcpp-slim/build-cpu/bin/llama-quantize
for n in tiny-granite-code $(ls "$out/hf"); do for q in q4_0 q4_K q8_0; do
  $Q "$out/$n-f32.gguf" "$out/$n-$q-quantize.gguf" $q > "$out/$n-$q-quantize.log" 2>&1
  echo "{\"model\":\"$n\",\"quantize\":\"$q\",\"rc\":$?}" >> "$out/convert.jsonl"
done; done
tail -3 /tmp/build-cpu.log; cat "$out/convert.jsonl"; ls -la "$out"
