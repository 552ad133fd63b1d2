# Sourced by the device scripts: the call's time budget (BUDGET s, default $1 or 560) and `left`, the seconds that
# remain of it, so that each step can stop before the device call's own limit; and the helpers they share.
start=$(date +%s)
budget=${BUDGET:-${1:-560}}
left() { echo $((budget - ($(date +%s) - start))); }
# Dawn's two lines about dynamic buffer limits, printed by every process, left out of the logs
quiet() { grep -v 'artificially reduced'; }
# a bench run's summary lines: quiet, and without the per-kernel rows of its profile
summary() { quiet | grep -vE '^ +[0-9.]+ +k[0-9]+_'; }
# the tiny model's reference generations decoded together (`bench greedy-batch`: the GPU's kernels checked), into OUT/checks.txt
greedy_checks() { timeout 60 node dist/bench.mjs greedy-batch assets/models/tiny-granite-code 2>&1 | quiet > "$1/checks.txt"; }
# the GPU, its driver and its clocks, into DIR/gpu.csv
gpu_info() { nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$1/gpu.csv" 2>&1; }
# batch 1 of CONFIG from BUNDLE (16-bit weights), its summary lines into OUT/ab.log, while more than MIN s are left
ab_run() {
  local out=$1 min=$2 bundle=$3 config=$4
  [ "$(left)" -gt "$min" ] || return 0
  echo "== $bundle $config" >> "$out/ab.log"
  timeout 60 node "$bundle" models --no-ops --config "$config" --cases f16:1 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log"
}
# the 128-token prefill profile of each CONFIG (TOP kernels) into OUT/profile-prefill.txt, while time is left
prefill_profiles() {
  local out=$1 top=$2 config
  shift 2
  for config in "$@"; do
    [ "$(left)" -gt 30 ] || break
    echo "== $config" >> "$out/profile-prefill.txt"
    timeout $(($(left) - 5)) node dist/bench.mjs profile "$config" --storage f16 --rows 1 --tokens 128 --top "$top" 2>&1 | quiet >> "$out/profile-prefill.txt"
  done
}
# batch 1 of CONFIG (16-bit weights) with the switch VAR=VALUE, its summary lines into OUT/ab.log, while more than MIN s are left
ab_env() {
  local out=$1 min=$2 var=$3 value=$4 config=$5
  [ "$(left)" -gt "$min" ] || return 0
  echo "== $var=$value $config f16:1" >> "$out/ab.log"
  env "$var=$value" timeout 60 node dist/bench.mjs models --no-ops --config "$config" --cases f16:1 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log"
}
# the f16 table's Strata half (batch 1 and 8 of every configuration) into OUT/strata.log and OUT/strata.json.gz, in the time left
table_f16() {
  local out=$1
  timeout $(($(left) - 10)) node dist/bench.mjs models --cases f16:1,f16:8 --out "$out/strata.json" 2>&1 | quiet > "$out/strata.log"
  gzip -9 "$out/strata.json"
}
# batch 1 of CONFIG (16-bit weights) with the switches VAR=VALUE..., its summary lines into OUT/ab.log, while more than MIN s are left
ab_envs() {
  local out=$1 min=$2 config=$3
  shift 3
  [ "$(left)" -gt "$min" ] || return 0
  echo "== ${*:-defaults} $config f16:1" >> "$out/ab.log"
  env "$@" timeout 60 node dist/bench.mjs models --no-ops --config "$config" --cases f16:1 --out /tmp/ab.json 2>&1 | summary >> "$out/ab.log"
}
