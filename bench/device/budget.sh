# Sourced by the device scripts: the call's time budget (BUDGET s, default $1 or 560) and `left`, the seconds that
# remain of it, so that each step can stop before the device call's own limit; and the helpers they share.
start=$(date +%s)
budget=${BUDGET:-${1:-560}}
left() { echo $((budget - ($(date +%s) - start))); }
# Dawn's two lines about dynamic buffer limits, printed by every process, left out of the logs
quiet() { grep -v 'artificially reduced'; }
# a bench run's summary lines: quiet, and without the per-kernel rows of its profile
summary() { quiet | grep -vE '^ +[0-9.]+ +k[0-9]+_'; }
# the GPU, its driver and its clocks, into DIR/gpu.csv
gpu_info() { nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$1/gpu.csv" 2>&1; }
