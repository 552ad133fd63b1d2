#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: does where the host's threads run decide batch-1 decode?
# The machine's CPUs (lscpu, NUMA nodes, the cgroup's CPU quota) into OUT/cpu.txt; then `bench host-record
# llama-400m` unpinned, on one core and on four cores of one NUMA node (taskset), alternated twice; then llama-400m's
# batch-1 bench unpinned and on four cores, alternated twice. Usage: bash bench/device/host-pinning.sh OUT_DIR
set -u
out=$1
source "$(dirname "$0")/budget.sh" 330
mkdir -p "$out"
gpu_info "$out"
{ nproc; lscpu; numactl -H 2>&1; cat /sys/fs/cgroup/cpu.max 2>&1; grep MHz /proc/cpuinfo | sort | uniq -c; } > "$out/cpu.txt" 2>&1
# four CPUs of the first NUMA node (lscpu's list), or the first four
four=$(lscpu -p=CPU,NODE 2>/dev/null | grep -v '^#' | awk -F, '$2 == 0 || $2 == "" {print $1}' | head -4 | paste -sd,)
four=${four:-0,1,2,3}
echo "four cores: $four" >> "$out/cpu.txt"
placement() { case $1 in none) echo "";; one) echo "taskset -c 2";; four) echo "taskset -c $four";; esac; }
for round in 1 2; do
  for where in none one four; do
    [ "$(left)" -gt 200 ] || continue
    echo "== host-record llama-400m ($where)" >> "$out/pinning.log"
    timeout 40 $(placement $where) node dist/bench.mjs host-record llama-400m --steps 32 --rounds 8 2>&1 | quiet >> "$out/pinning.log"
  done
done
for round in 1 2; do
  for where in none four; do
    [ "$(left)" -gt 40 ] || continue
    echo "== models llama-400m f16:1 ($where)" >> "$out/pinning.log"
    timeout 60 $(placement $where) node dist/bench.mjs models --no-ops --config llama-400m --cases f16:1 --out /tmp/pin.json 2>&1 | summary >> "$out/pinning.log"
  done
done
echo "host-pinning.sh: done in $(($(date +%s) - start)) s"
head -30 "$out/cpu.txt"
grep -E '^==|round [0-7]:|batch 1' "$out/pinning.log"
