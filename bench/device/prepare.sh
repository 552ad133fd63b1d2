#!/usr/bin/env bash
# Prepares what one H200 `run` call needs to run Strata's bench and llama.cpp's CUDA bench, in git-ignored folders
# of this checkout, then prints the `run` commands and `carry` list (see bench/device/README.md).
#   dist/bench.mjs   the bench and the profile tool, bundled by esbuild (node_modules does not travel)
#   .peers/          a copy of ../shared/tools/peers (llama.cpp source snapshot and its bench script)
#   .device/         Node, dawn.node and the Vulkan loader, from ../shared/tools/gpu-machine/prep.sh (made once)
# Run it in the checkout that the device call sends: the session's own checkout, not a linked worktree.
# Usage: bash bench/device/prepare.sh      (STRATA_SHARED overrides the path of ../shared)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared=${STRATA_SHARED:-$root/../shared}

# the commit goes into the bundle: the device's copy of the checkout may report another HEAD
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo -dirty)
npx esbuild bench/cli.ts --bundle --platform=node --format=esm --external:webgpu --log-level=warning \
  --banner:js="import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" \
  --define:STRATA_BUILD_COMMIT="\"$commit\"" --outfile=dist/bench.mjs

[ -d .peers ] && chmod -R u+w .peers && rm -rf .peers
cp -r "$shared/tools/peers" .peers
chmod -R u+w .peers # the shared copy is read-only
# TYPES=f16 benches only the f16 GGUFs (the README table's), which keeps llama.cpp's call and Strata's in one lease
sed -i 's/for n in \$names; do for t in f16 f32; do/for n in $names; do for t in ${TYPES:-f16 f32}; do/' .peers/run-llamacpp.sh
grep -q 'TYPES:-f16 f32' .peers/run-llamacpp.sh || echo "prepare.sh: run-llamacpp.sh changed; TYPES=f16 has no effect" >&2

if [ ! -d .device ]; then
  if [ -f .git ]; then
    echo "prepare.sh: $root is a linked worktree (prep.sh needs .git/ as a folder); .device/ not made." >&2
    echo "  The device call sends the session's main checkout: run this script there." >&2
  else
    bash "$shared/tools/gpu-machine/prep.sh"
  fi
fi

for ignored in dist .peers .device; do
  git check-ignore -q "$ignored/" || { echo "prepare.sh: $ignored/ is not git-ignored: it would travel as untracked files and llama.cpp must not be committed" >&2; exit 1; }
done
tracked=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | du -cbL --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb $(ls -d dist .peers .device 2>/dev/null) | tail -1 | cut -f1)
echo "travels: tracked and untracked files $((tracked >> 20)) MiB + carried (dist .peers .device) $((carried >> 20)) MiB"
[ $(((tracked + carried) >> 20)) -lt 64 ] || echo "prepare.sh: over the device call's 64 MiB: ignore or remove untracked files" >&2
cat <<EOM

carry: [".device", "dist", ".peers"]

call 1, llama.cpp CUDA (build ~3-5 min, conversion, llama-bench, llama-batched-bench; re-entrant: repeat it
on the warm machine if it ends with "build still running"), timeout_s 600:
mkdir -p \$OUT/llamacpp; bash .peers/run-llamacpp.sh bench/configs.json assets/models/tiny-granite-code "\$OUT/llamacpp"

call 2, Strata (bench of every configuration, then per-kernel profiles while time is left), timeout_s 600:
source .device/start.sh; STRATA_COMMIT=$commit bash bench/device/strata.sh "\$OUT/strata"

If strata.json lacks configurations (the bench stopped at its budget), call 3 with the missing ones:
source .device/start.sh; STRATA_COMMIT=$commit bash bench/device/strata.sh "\$OUT/strata" jamba-small

Afterwards: npx tsx bench/summarize.ts <files_at>/strata/strata.json --llamacpp <files_at of call 1>/llamacpp
EOM
