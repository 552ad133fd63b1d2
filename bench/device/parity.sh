#!/usr/bin/env bash
# On the GPU machine, after `source .device/start.sh`: `strata parity` of every fixture in test/fixtures/hf with the
# GPU's defaults (subgroups, unrolled loops, the decode attention computing its q/k/v), which the suite runs on
# lavapipe only. Needs dist/cli.mjs (dist/strata-entry.ts bundled: bench/device/README.md). 1 file in OUT_DIR; exits non-zero when a check fails.
# Usage: bash bench/device/parity.sh OUT_DIR
set -u
out=$1
mkdir -p "$out"
status=0
for dir in test/fixtures/hf/*/; do
  echo "== $dir" >> "$out/parity.txt"
  timeout 120 node dist/cli.mjs parity "$dir" 2>&1 | grep -v 'artificially reduced' >> "$out/parity.txt" || status=1
done
grep -E '^==|FAIL|decode program' "$out/parity.txt"
echo "parity.sh: $(grep -c '^PASS' "$out/parity.txt") checks passed, $(grep -c '^FAIL' "$out/parity.txt") failed"
exit $status
