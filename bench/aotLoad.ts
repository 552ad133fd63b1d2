// Load time and time to first token, traced vs from an AOT module compiled for this adapter, in Node (figures, not
// pass/fail). Each load runs in a fresh process with Mesa's shader disk cache off, alternating the two paths, so
// neither finds the other's compiled shaders.
// Usage: npx tsx bench/aotLoad.ts [model-dir] [--runs 2]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { emitAotModule } from '../compiler/emitModule.ts';
import { compileModel } from '../runtime/compileAot.ts';
import { Session } from '../runtime/session.ts';

const SHAPE = { slots: 1, capacity: 128, prefillChunks: [16], decodeRows: [1] };
const PROMPT = 'def fibonacci(n):';

async function child(mode: string, modelDir: string, modulePath: string): Promise<void> {
  const aot = mode === 'aot' ? (await import(modulePath)).default : undefined;
  const session = await Session.load(modelDir, aot ? { aot } : SHAPE);
  const result = await session.generate(PROMPT, { maxNewTokens: 8 }).result();
  await session.close();
  console.log(JSON.stringify({ load: session.loadSeconds, ttft: result.stats.timeToFirstTokenSeconds, ids: result.ids }));
  process.exit(0);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return child(args[1]!, args[2]!, args[3]!);
  const modelDir = args.find((a) => !a.startsWith('--') && !/^\d+$/.test(a)) ?? 'assets/models/tiny-granite-code';
  const runs = Number(args[args.indexOf('--runs') + 1] ?? 2) || 2;
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-aot-bench-'));
  try {
    const modulePath = path.join(folder, 'model.strata.mjs');
    const model = await compileModel(modelDir, { ...SHAPE, targets: ['device'] });
    fs.writeFileSync(modulePath, await emitAotModule(model, { from: modelDir, language: 'js' }));
    const figures: Record<string, { load: number; ttft: number; ids: number[] }[]> = { traced: [], aot: [] };
    for (let run = 0; run < runs; run++)
      for (const mode of run % 2 ? ['aot', 'traced'] : ['traced', 'aot']) {
        const out = execFileSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--child', mode, modelDir, modulePath], {
          env: { ...process.env, MESA_SHADER_CACHE_DISABLE: 'true' },
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        figures[mode]!.push(JSON.parse(out.trim().split('\n').at(-1)!));
      }
    const same = JSON.stringify(figures.traced![0]!.ids) === JSON.stringify(figures.aot![0]!.ids);
    for (const [mode, list] of Object.entries(figures))
      console.log(`${mode.padEnd(6)} load ${list.map((f) => f.load.toFixed(1)).join(' / ')} s, first token ${list.map((f) => f.ttft.toFixed(2)).join(' / ')} s`);
    console.log(`ids ${same ? 'identical' : 'DIFFER'}; ${model.variants[0]!.target}, ${Object.values(model.variants[0]!.programs).reduce((n, p) => n + p.kernels.length, 0)} dispatches in all programs`);
  } finally {
    fs.rmSync(folder, { recursive: true, force: true });
  }
}

await main();
