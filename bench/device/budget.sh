# Sourced by the device scripts: the call's time budget (BUDGET s, default $1 or 560) and `left`, the seconds that
# remain of it, so that each step can stop before the device call's own limit.
start=$(date +%s)
budget=${BUDGET:-${1:-560}}
left() { echo $((budget - ($(date +%s) - start))); }
