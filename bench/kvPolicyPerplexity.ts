// Perplexity of tiny-granite-code on a held-out code text (bench/data/heldout-code.py) under KV policies:
// dense, lastRecent (4 sinks + recent) and h2o (recent + heavy, half each) at two budgets. Tokens are fed one per
// step (the streaming setting the policies are for); the negative log-likelihood of each next token is summed.
// Usage: npx tsx bench/kvPolicyPerplexity.ts [--tokens N] [--out file.json]
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSafetensors } from '../base/safetensors.ts';
import { type KvPolicy, describePolicy } from '../caches/spec.ts';
import { loadConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { Tokenizer } from '../runtime/tokenizer.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(ROOT, 'assets/models/tiny-granite-code');
const TEXT = path.join(ROOT, 'bench/data/heldout-code.py');
const BUDGETS = [32, 64];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function logSoftmaxAt(logits: Float32Array, index: number): number {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  return logits[index]! - max - Math.log(sum);
}

async function main(): Promise<void> {
  const tokenizer = await Tokenizer.load(MODEL);
  const ids = tokenizer.encode(readFileSync(TEXT, 'utf8')).slice(0, Number(arg('--tokens') ?? 512));
  const config = await loadConfig(MODEL);
  const model = buildModel(config);
  const runtime = new GpuRuntime(await getSharedDevice());
  const checkpoint = await openSafetensors(MODEL);
  const policies: KvPolicy[] = [{ kind: 'dense' }];
  for (const budget of BUDGETS) policies.push({ kind: 'lastRecent', sinks: 4, recent: budget - 4 }, { kind: 'h2o', recent: budget / 2, heavy: budget / 2 });
  const rows: { policy: string; budget: number | null; tokens: number; nll: number; perplexity: number }[] = [];
  for (const policy of policies) {
    const runner = new ModelRunner(runtime, model, checkpoint, { slots: 1, capacity: ids.length, chunks: [1], config, kvPolicy: policy });
    let nll = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const [logits] = await runner.step([{ slot: 0, tokens: [ids[t]!] }], 'last', { rows: 1, tokens: 1 });
      nll -= logSoftmaxAt(logits!, ids[t + 1]!);
    }
    const n = ids.length - 1;
    const budget = policy.kind === 'dense' ? null : policy.kind === 'h2o' ? policy.recent + policy.heavy : policy.kind === 'lastRecent' ? policy.sinks + policy.recent : policy.window;
    rows.push({ policy: describePolicy(policy), budget, tokens: n, nll: nll / n, perplexity: Math.exp(nll / n) });
    console.error(`${describePolicy(policy)}: perplexity ${Math.exp(nll / n).toFixed(3)} over ${n} tokens`);
  }
  const out = { model: 'assets/models/tiny-granite-code', text: 'bench/data/heldout-code.py', attentionLayers: model.memory().filter((l) => l.kv).length, layers: model.memory().length, feeding: 'one token per step', adapter: runtime.strata.adapterInfo, rows };
  const file = arg('--out');
  if (file) writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  console.log('| policy | budget | perplexity | mean NLL |\n|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.policy} | ${r.budget ?? 'all'} | ${r.perplexity.toFixed(3)} | ${r.nll.toFixed(4)} |`);
  await checkpoint.close();
}

await main();
