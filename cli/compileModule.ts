// `strata compile <model-dir> --out model.strata.ts`: traces and compiles every program of a session shape and
// writes them as an ahead-of-time module (compiler/emitModule.ts); `.js`/`.mjs` outputs are plain JavaScript.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { StrataUserError } from '../base/errors.ts';
import { emitAotModule } from '../compiler/emitModule.ts';
import { compileModel } from '../runtime/compileAot.ts';
import { integer, progressPrinter } from './generate.ts';

const chunkList = (value: string): number[] => {
  const sizes = value.split(',').map((s) => Number(s.trim()));
  if (!sizes.length || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new StrataUserError(`expected comma-separated positive integers, got '${value}'`);
  return sizes;
};

/** The module text for `out` (TypeScript or JavaScript by its extension). */
async function moduleText(out: string, emit: (language: 'ts' | 'js') => Promise<string>): Promise<string> {
  if (/\.ts$/.test(out)) return emit('ts');
  if (/\.m?js$/.test(out)) return emit('js');
  throw new StrataUserError(`--out ${out}: expected a .ts, .js or .mjs file name`);
}

export function register(program: Command): void {
  program
    .command('compile <model-dir>')
    .description('Compile every program of a model ahead of time into a TypeScript module (WGSL kernels, dispatch lists, buffer plans, memory spec)')
    .requiredOption('--out <file>', 'module to write: model.strata.ts (or .js/.mjs for plain JavaScript)')
    .option('--slots <n>', 'sequences decoding together', integer('--slots', 1), 1)
    .option('--capacity <n>', 'tokens per sequence', integer('--capacity', 1), 256)
    .option('--prefill-chunks <list>', 'prefill chunk sizes', chunkList, [16])
    .option('--decode-rows <list>', 'decode buckets (rows per step)', chunkList)
    .option('--steps-per-submit <k>', 'decode steps per submission', integer('--steps-per-submit', 1), 8)
    .action(async (modelDir: string, options: { out: string; slots: number; capacity: number; prefillChunks: number[]; decodeRows?: number[]; stepsPerSubmit: number }) => {
      await moduleText(options.out, async () => ''); // a bad extension fails before anything is compiled
      const progress = progressPrinter(true);
      const model = await compileModel(modelDir, {
        slots: options.slots,
        capacity: options.capacity,
        prefillChunks: options.prefillChunks,
        stepsPerSubmit: options.stepsPerSubmit,
        ...(options.decodeRows ? { decodeRows: options.decodeRows } : {}),
        onProgress: (e) => progress.update(e),
      });
      progress.clear();
      const text = await moduleText(options.out, (language) => emitAotModule(model, { from: path.basename(path.resolve(modelDir)), language }));
      // written whole or not at all
      const temporary = `${options.out}.tmp-${process.pid}`;
      try {
        await fsp.writeFile(temporary, text);
        await fsp.rename(temporary, options.out);
      } finally {
        await fsp.rm(temporary, { force: true });
      }
      const kernels = Object.values(model.programs).reduce((n, p) => n + p.kernels.length, 0);
      console.log(`${options.out}: ${Object.keys(model.programs).length} programs, ${kernels} dispatches, ${(text.length / 1024).toFixed(0)} KiB`);
    });
}
