// `bench speculative [--model DIR] [--k N] [--tokens N] [--prompt TEXT] [--draft-model DIR] [--out FILE]`: greedy
// speculative decoding against plain one-token decoding of the same host-driven loop, on a repetitive code prompt:
// acceptance rate, tokens per verify step, rollbacks (and snapshot re-feeds, for a recurrent target), tokens/s
// and the speed-up, and whether the tokens are identical. Figures, not pass/fail.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { openSafetensors } from '../base/safetensors.ts';
import { type DraftSource, ModelDraft, PromptLookupDraft, type SpeculativeResult, speculativeGenerate } from '../runtime/speculative.ts';
import { Tokenizer } from '../runtime/tokenizer.ts';

const DEFAULT_MODEL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../assets/models/tiny-granite-code');

/** Code that repeats itself, as edits and boilerplate do. */
export const REPETITIVE_CODE = [
  'def add(a, b):\n    return a + b\n\n',
  'def sub(a, b):\n    return a - b\n\n',
  'def mul(a, b):\n    return a * b\n\n',
  'def div(a, b):\n',
].join('');

interface Args {
  model: string;
  k: number;
  tokens: number;
  prompt: string;
  draftModel?: string;
  out?: string;
}

function parse(argv: string[]): Args {
  const args: Args = { model: DEFAULT_MODEL, k: 4, tokens: 64, prompt: REPETITIVE_CODE };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    const need = () => {
      if (value === undefined) throw new Error(`${argv[i]} needs a value`);
      i++;
      return value;
    };
    switch (argv[i]) {
      case '--model': args.model = need(); break;
      case '--k': args.k = Number(need()); break;
      case '--tokens': args.tokens = Number(need()); break;
      case '--prompt': args.prompt = need(); break;
      case '--draft-model': args.draftModel = need(); break;
      case '--out': args.out = need(); break;
      default: throw new Error(`bench speculative: unknown option ${argv[i]} (--model --k --tokens --prompt --draft-model --out)`);
    }
  }
  if (!Number.isInteger(args.k) || args.k < 1) throw new Error(`--k must be a positive integer, got ${args.k}`);
  if (!Number.isInteger(args.tokens) || args.tokens < 2) throw new Error(`--tokens must be an integer >= 2, got ${args.tokens}`);
  return args;
}

async function openRunner(runtime: GpuRuntime, dir: string, capacity: number): Promise<ModelRunner> {
  const config = await loadConfig(dir);
  return new ModelRunner(runtime, buildModel(config), await openSafetensors(dir), { slots: 1, capacity, chunks: [16], config });
}

export async function speculativeBench(argv: string[]): Promise<void> {
  const args = parse(argv);
  const device = await getSharedDevice();
  const runtime = new GpuRuntime(device);
  const tokenizer = await Tokenizer.load(args.model);
  const promptIds = tokenizer.encode(args.prompt);
  const capacity = promptIds.length + args.tokens + args.k + 2;
  const target = await openRunner(runtime, args.model, capacity);
  const drafts: DraftSource[] = [new PromptLookupDraft()];
  if (args.draftModel) drafts.push(new ModelDraft(await openRunner(runtime, args.draftModel, capacity)));
  const run = (draft: DraftSource, k: number) => speculativeGenerate(target, 0, promptIds, { draft, k, maxNewTokens: args.tokens, stopIds: [] });
  // the first run of each compiles its programs; the second is measured
  const measure = async (draft: DraftSource, k: number): Promise<SpeculativeResult> => (await run(draft, k), run(draft, k));
  const plain = await measure(drafts[0]!, 0);
  const rate = (r: SpeculativeResult) => (r.ids.length - 1) / r.decodeSeconds;
  const report = {
    date: new Date().toISOString(),
    machine: { hostname: os.hostname(), cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}` },
    adapter: { ...device.adapterInfo, fallback: device.isFallback ?? false },
    commit: process.env.STRATA_COMMIT ?? 'see git',
    model: path.basename(args.model),
    family: target.model.family,
    promptTokens: promptIds.length,
    newTokens: args.tokens,
    plain: { tokensPerSecond: rate(plain), steps: plain.verifySteps, msPerStep: (plain.decodeSeconds * 1000) / plain.targetSteps },
    loadAverage: os.loadavg(),
    speculative: [] as Record<string, unknown>[],
  };
  for (const draft of drafts) {
    const r = await measure(draft, args.k);
    report.speculative.push({
      draft: draft.name,
      k: args.k,
      acceptanceRate: r.acceptanceRate,
      tokensPerStep: r.tokensPerStep,
      verifySteps: r.verifySteps,
      targetSteps: r.targetSteps,
      msPerTargetStep: (r.decodeSeconds * 1000) / r.targetSteps,
      rollbacks: r.rollbacks,
      recomputes: r.recomputes,
      tokensPerSecond: rate(r),
      speedup: rate(r) / rate(plain),
      identicalToPlain: r.ids.join() === plain.ids.join(),
    });
  }
  const text = JSON.stringify(report, null, 2);
  if (args.out) fs.writeFileSync(args.out, text);
  console.log(text);
}
