#!/usr/bin/env bash
# tiny-granite-code's greedy tokens from a 114-token prompt (its prefill on the tiled kernels) with the subgroup
# matrix kernel and without (STRATA_SUBGROUP_MATRIX=0): prints whether the ids agree. Needs dist/strata.mjs and
# dist/tgc (a copy of the tiny model). Output under $1.
out=$1; mkdir -p "$out"
prompt=$(printf 'import os\nimport sys\n\n\ndef read_lines(path):\n    with open(path) as f:\n        return [line.rstrip() for line in f]\n\n\ndef count_words(lines):\n    total = 0\n    for line in lines:\n        total += len(line.split())\n    return total\n\n\ndef main():\n    lines = read_lines(sys.argv[1])\n    print(count_words(lines))\n\n\ndef longest(lines):\n')
for m in 1 0; do STRATA_SUBGROUP_MATRIX=$m timeout 60 node dist/strata.mjs generate --model dist/tgc --prompt "$prompt" --max-new-tokens 48 --json > "$out/gen$m.json" 2> "$out/gen$m.err"; done
node -e "const a=require('$out/gen1.json'),b=require('$out/gen0.json');console.log('prompt tokens',a.promptIds.length,'generated',a.ids.length,'same ids',JSON.stringify(a.ids)===JSON.stringify(b.ids));console.log('matrix',JSON.stringify(a.text));console.log('f32   ',JSON.stringify(b.text))" > "$out/generate.txt" 2>&1
