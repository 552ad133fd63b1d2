// `bench serve-load [--model DIR] [--requests N] [--concurrency C] [--max-tokens N] [--slots S] [--out FILE]`: starts
// strata serve in this process on the loopback interface, sends a bounded number of completion requests from C
// concurrent clients, and reports requests/s, tokens/s and p50/p99 latency (whole request, and time to the first
// streamed token). Figures, not pass/fail.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Session } from '../runtime/session.ts';
import { readMetric } from '../serve/metrics.ts';
import { startServer } from '../serve/server.ts';

const DEFAULT_MODEL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../assets/models/tiny-granite-code');

interface Args {
  model: string;
  requests: number;
  concurrency: number;
  maxTokens: number;
  slots: number;
  out?: string;
}

function parse(argv: string[]): Args {
  const args: Args = { model: DEFAULT_MODEL, requests: 32, concurrency: 8, maxTokens: 16, slots: 4 };
  const numeric = { '--requests': 'requests', '--concurrency': 'concurrency', '--max-tokens': 'maxTokens', '--slots': 'slots' } as const;
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--model') args.model = value;
    else if (flag === '--out') args.out = value;
    else if (flag in numeric) {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new Error(`${flag} must be an integer in 1..10000, got ${value}`);
      args[numeric[flag as keyof typeof numeric]] = n;
    } else throw new Error(`bench serve-load: unknown option ${flag} (--model --requests --concurrency --max-tokens --slots --out)`);
  }
  return args;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** One streamed completion: seconds to the first token and to the end, tokens generated. */
async function oneRequest(url: string, model: string, prompt: string, maxTokens: number, seed: number): Promise<{ first: number; total: number; tokens: number }> {
  const t0 = performance.now();
  const response = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0.8, seed, stream: true, stream_options: { include_usage: true } }),
  });
  if (response.status !== 200) throw new Error(`status ${response.status}: ${await response.text()}`);
  let first = 0;
  let tokens = 0;
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const bytes of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(bytes, { stream: true });
    const events = buffered.split('\n\n');
    buffered = events.pop()!;
    for (const event of events) {
      const data = event.replace(/^data: /, '');
      if (data === '[DONE]') continue;
      const chunk = JSON.parse(data) as { choices: { text: string }[]; usage?: { completion_tokens: number } };
      if (!first && chunk.choices[0]?.text) first = performance.now();
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
  }
  const end = performance.now();
  return { first: ((first || end) - t0) / 1000, total: (end - t0) / 1000, tokens };
}

export async function serveLoadBench(argv: string[]): Promise<void> {
  const args = parse(argv);
  const session = await Session.load(args.model, { slots: args.slots, capacity: 256, prefillChunks: [16], prefixCache: { entries: 4 }, warmUp: 'all' });
  const server = await startServer(session, { port: 0, host: '127.0.0.1' });
  try {
    const prompts = Array.from({ length: args.requests }, (_, i) => `# request ${i}\ndef f${i}(x):\n`);
    // one request first, so that the measured run starts warm
    await oneRequest(server.url, server.modelName, 'def warm():', 2, 0);
    const results: { first: number; total: number; tokens: number }[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: args.concurrency }, async () => {
        while (next < prompts.length) {
          const i = next++;
          results.push(await oneRequest(server.url, server.modelName, prompts[i]!, args.maxTokens, i));
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const totals = results.map((r) => r.total).sort((a, b) => a - b);
    const firsts = results.map((r) => r.first).sort((a, b) => a - b);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const adapter = session.runner.runtime.strata.adapterInfo;
    const report = {
      date: new Date().toISOString(),
      machine: { hostname: os.hostname(), cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}`, loadAverage: os.loadavg() },
      adapter: { vendor: adapter.vendor, device: adapter.device || adapter.description },
      model: server.modelName,
      slots: args.slots,
      requests: args.requests,
      concurrency: args.concurrency,
      maxTokens: args.maxTokens,
      seconds,
      requestsPerSecond: args.requests / seconds,
      generatedTokensPerSecond: results.reduce((a, r) => a + r.tokens, 0) / seconds,
      latencySeconds: { p50: percentile(totals, 50), p99: percentile(totals, 99) },
      timeToFirstTokenSeconds: { p50: percentile(firsts, 50), p99: percentile(firsts, 99) },
      prefixCacheHitRate: readMetric(metrics, 'prefix_cache_hit_rate'),
    };
    const text = JSON.stringify(report, null, 2);
    if (args.out) fs.writeFileSync(args.out, text);
    console.log(text);
  } finally {
    await server.close();
    await session.close();
  }
}
