// `strata compile <model-dir> --out model.strata.ts`: traces and compiles every program of a session shape and
// writes them as an ahead-of-time module (compiler/emitModule.ts); `.js`/`.mjs` outputs are plain JavaScript.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { StrataUserError } from '../base/errors.ts';
import { emitAotModule, loadTsMorph } from '../compiler/emitModule.ts';
import { type CompileTarget, compileModel } from '../runtime/compileAot.ts';
import { integer, progressPrinter } from './generate.ts';

const chunkList = (value: string): number[] => {
  const sizes = value.split(',').map((s) => Number(s.trim()));
  if (!sizes.length || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new StrataUserError(`expected comma-separated positive integers, got '${value}'`);
  return sizes;
};

/**
 * An adapter profile file: `strata doctor --json` on the target machine, or `adapterProfile(await getSharedDevice())`
 * saved from a page (the demo page shows it).
 */
const profileSchema = z.object({
  name: z.string().optional(),
  adapterInfo: z.object({ vendor: z.string(), architecture: z.string() }).partial().optional(),
  limits: z.record(z.string(), z.number()),
  features: z.array(z.string()),
  isFallback: z.boolean().optional(),
  subgroupMatrix: z.object({ m: z.number().int().positive(), n: z.number().int().positive(), k: z.number().int().positive(), size: z.number().int().positive() }).optional(),
});

async function readTarget(value: string): Promise<CompileTarget> {
  if (value === 'portable' || value === 'device') return value;
  let json: unknown;
  try {
    json = JSON.parse(await fsp.readFile(value, 'utf8'));
  } catch (error) {
    const reason = (error as { code?: string }).code === 'ENOENT' ? 'no such file' : (error as Error).message;
    throw new StrataUserError(`--target ${value}: expected portable, device, or an adapter profile JSON file (strata doctor --json): ${reason}`);
  }
  const parsed = profileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new StrataUserError(`--target ${value}: not an adapter profile: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  const { name, adapterInfo, ...profile } = parsed.data;
  return { ...profile, name: name ?? ([adapterInfo?.vendor, adapterInfo?.architecture].filter(Boolean).join(' ') || path.basename(value, '.json')) };
}

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
    .option(
      '--target <target>',
      'a variant per target, most demanding first (repeat): device (this adapter), portable (any WebGPU), or an adapter profile JSON (strata doctor --json); default device, portable',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .action(async (modelDir: string, options: { out: string; slots: number; capacity: number; prefillChunks: number[]; decodeRows?: number[]; stepsPerSubmit: number; target?: string[] }) => {
      // a bad extension, target or a missing ts-morph fails before anything is compiled
      await moduleText(options.out, async () => '');
      const targets = await Promise.all((options.target ?? ['device', 'portable']).map(readTarget));
      await loadTsMorph();
      const progress = progressPrinter(true);
      const model = await compileModel(modelDir, {
        slots: options.slots,
        capacity: options.capacity,
        prefillChunks: options.prefillChunks,
        stepsPerSubmit: options.stepsPerSubmit,
        targets,
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
      const variants = model.variants.map((v) => `${v.target} (${Object.keys(v.programs).length} programs, ${Object.values(v.programs).reduce((n, p) => n + p.kernels.length, 0)} dispatches)`);
      console.log(`${options.out}: ${variants.join('; ')}, ${(text.length / 1024).toFixed(0)} KiB`);
    });
}
