#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: A/B measurements of the kernel variants in one call, each
# against the default in the same process or the same call (attention alone; quantized and batch-8 matvecs alone;
# and whole decode steps per variant). Output in OUT_DIR (<= 7 files).
# Usage: bash bench/device/variants.sh OUT_DIR   (BUDGET s, default 420)
set -u
out=$1; mkdir -p "$out"
start=$(date +%s); budget=${BUDGET:-420}
left() { echo $((budget - ($(date +%s) - start))); }
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv,noheader -lms 500 > "$out/gpu.csv" 2>&1 &
clocks=$!
step() { # LOG TIMEOUT CMD...
  local log=$1 t=$2; shift 2
  [ "$(left)" -gt 20 ] || { echo "skipped (budget): $*" >> "$out/$log"; return; }
  echo "== $*" >> "$out/$log"
  timeout $(( t < $(left) - 10 ? t : $(left) - 10 )) env "$@" 2>&1 | grep -v 'artificially reduced' >> "$out/$log"
}
# this stop's A/B: the matvec's K loop reading x as vec4s (Emitter.vectorLoads) against scalar loads
# (STRATA_VECTOR_LOADS=0), in the sweep's large matrices and in whole decode steps (summed kernel time), and the
# quantized K loops lanes and wide with vector loads
step sweep.txt 100 node dist/bench.mjs quant-sweep --large --variants lanes,wide,auto
for env in "X=0" "STRATA_VECTOR_LOADS=0"; do
  step profile.txt 60 $env node dist/bench.mjs profile llama-400m --storage f16 --context 192 --top 6
done
for env in "X=0" "STRATA_VECTOR_LOADS=0" "STRATA_QUANT_MATVEC=wide" "STRATA_QUANT_MATVEC=lanes"; do
  step profile.txt 75 $env node dist/bench.mjs profile llama-400m --storage q4 --context 192 --top 6
done
for env in "X=0" "STRATA_QUANT_MATVEC=wide"; do
  step profile.txt 75 $env node dist/bench.mjs profile llama-400m --storage q8 --context 192 --top 6
done
for env in "X=0" "STRATA_VECTOR_LOADS=0"; do
  step profile.txt 60 $env node dist/bench.mjs profile granite4h-350m-like --storage f16 --context 192 --top 6
done
# the previous stop's (measured at a1d2585, bench/results/2026-12-03-h200-0cd29b9/wide-a1d2585): the quantized K
# loops lanes and wide at the large matrices, beside the GPU default (auto: wide for one row of q8 over K >= 4096),
# before vector loads
step sweep.txt 90 STRATA_VECTOR_LOADS=0 node dist/bench.mjs quant-sweep --large --variants lanes,wide,auto
# the decode kernels that compute their own projections (measured at 01c1461, bench/results/2026-12-03-h200-bf948cf/
# ab-01c1461): the default (attention projection in batched buckets only, SSD projection off) against the attention's
# everywhere (=1: llama-400m 97 dispatches at batch 1) and none (=0), and the Mamba-2 step's (133 against 161
# dispatches for granite4h-350m-like; 'heads': 48 step workgroups, not 96, each recomputing the B and C rows)
for env in "X=0" "STRATA_ATTN_PROJECTION=1" "STRATA_ATTN_PROJECTION=0"; do
  step models.txt 120 $env node dist/bench.mjs models --config llama-400m --cases f16:1,f16:8
done
for env in "X=0" "STRATA_SSD_PROJECTION=1" "STRATA_SSD_PROJECTION=heads"; do
  step profile.txt 60 $env node dist/bench.mjs profile granite4h-350m-like --storage f16 --context 192 --top 6
done
# Dawn's robustness (clamped buffer indices in every kernel) off, a measurement only (STRATA_DAWN_TOGGLES; ~3% of the
# f16 decode kernels' summed time at 0cd29b9)
step profile.txt 60 STRATA_DAWN_TOGGLES=disable_robustness node dist/bench.mjs profile llama-400m --storage f16 --context 192 --top 6
# this stop's A/B (measured at 0f2b24e, bench/results/2026-12-02-h200-0f2b24e/dispatch): the position update in the LM
# head's dispatch (one-workgroup fusion) against a map and a scatter of their own (decode: 121 against 123 dispatches); then the h2o case, where the K/V moves fuse too (241 against 339)
for env in "X=0" "STRATA_ONE_GROUP_FUSION=0"; do
  step profile.txt 60 $env node dist/bench.mjs profile llama-400m --storage f16 --context 192 --top 6
done
for env in "X=0" "STRATA_ONE_GROUP_FUSION=0"; do
  step models.txt 120 $env node dist/bench.mjs models --config llama-400m --cases f16:1,f16:1:h2o
done
# the previous stop's A/B: the Mamba-1 prefill scan as one kernel (selscan) against the chunked composition it replaced
for env in "X=0" "STRATA_SELECTIVE_SCAN=0"; do
  step profile.txt 60 $env node dist/bench.mjs profile jamba-small --storage f16 --tokens 128 --top 10
done
# and the decode step's (measured at 8db011c: variants/ of bench/results/2026-12-02-h200-8db011c)
for env in "X=0" "STRATA_SELECTIVE_STEP=0 STRATA_JAMBA_ROUTING=topk"; do
  step profile.txt 45 $env node dist/bench.mjs profile jamba-small --storage f16 --context 192 --top 6
done
# earlier stops' variants, while the budget lasts
step attn.txt 60 node dist/bench.mjs attn --variants 'lanes sector vec'
step ops.txt 150 node dist/bench.mjs ops --variants half,staged,lanes,wide,auto,dot4
kill $clocks 2>/dev/null
echo "variants.sh: done in $(($(date +%s) - start)) s"
