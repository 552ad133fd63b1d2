// `strata parity <model-dir>`: checks a checkpoint against transformers reference logits and exits non-zero
// when any check fails.
import type { Command } from 'commander';
import * as path from 'node:path';
import { runParity } from '../runtime/parity.ts';

interface ParityOptions {
  reference?: string;
  atol: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('parity')
    .description('Compare prefill logits, cached decode logits and greedy tokens with a transformers reference file')
    .argument('<model-dir>', 'folder with config.json and model.safetensors')
    .option('--reference <file>', 'reference in the fixtures format (default: <model-dir>/reference.safetensors)')
    .option('--atol <x>', 'absolute tolerance on logits', '1e-4')
    .option('--json', 'print the measurements as JSON')
    .action(async (dir: string, options: ParityOptions) => {
      const atol = Number(options.atol);
      const r = await runParity(path.resolve(dir), options.reference ? { reference: path.resolve(options.reference) } : {});
      const firstDiff = r.greedy.findIndex((t, i) => t !== r.greedyExpected[i]);
      const checks = [
        { check: 'prefill logits', maxAbs: r.prefillMaxAbs, maxRel: r.prefillMaxRel, tolerance: atol, pass: r.prefillMaxAbs <= atol },
        { check: 'cached decode vs prefill logits', maxAbs: r.decodeMaxAbs, maxRel: r.decodeMaxRel, tolerance: atol, pass: r.decodeMaxAbs <= atol },
        { check: 'greedy tokens', firstDifference: firstDiff < 0 ? null : firstDiff, pass: firstDiff < 0 && r.greedy.length === r.greedyExpected.length },
      ];
      if (options.json) console.log(JSON.stringify({ checks, decodeVsHfDecodeMaxAbs: r.decodeVsHfDecodeMaxAbs, decodeTemplates: r.decodeTemplates, greedy: r.greedy, greedyExpected: r.greedyExpected }, null, 2));
      else {
        for (const c of checks) {
          const detail = 'maxAbs' in c ? `max abs ${c.maxAbs!.toExponential(2)}, max rel ${c.maxRel!.toExponential(2)}, tolerance ${c.tolerance}` : c.firstDifference === null ? 'identical' : `first difference at token ${c.firstDifference}`;
          console.log(`${c.pass ? 'PASS' : 'FAIL'}  ${c.check}: ${detail}`);
        }
        console.log(`info  cached decode vs transformers' own cached decode: max abs ${r.decodeVsHfDecodeMaxAbs.toExponential(2)}`);
        console.log(`info  one-token decode program: ${r.decodeTemplates.length} kernels (${templateCounts(r.decodeTemplates)})`);
      }
      if (!checks.every((c) => c.pass)) process.exitCode = 1;
    });
}

/** `attention/decode+qkv x2, matvec x7`: each template and how many kernels of the program it names. */
function templateCounts(templates: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const t of templates) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts].map(([t, n]) => `${t} x${n}`).join(', ');
}
