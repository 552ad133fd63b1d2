// `strata generate`: loads a model folder into a session and streams generated text to stdout, then a line of
// throughput figures to stderr; `--json` prints one JSON object instead. Progress goes to stderr while loading.
import { type Command, InvalidArgumentError } from 'commander';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type LoadProgress, PromptError, Session } from '../runtime/session.ts';
import type { SequenceStats } from '../runtime/generator.ts';
import type { QuantStorage } from '../compiler/quantized.ts';

export const DEFAULT_MODEL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../assets/models/tiny-granite-code');

interface GenerateCliOptions {
  model: string;
  prompt?: string;
  promptIds?: number[];
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  seed?: number;
  stop?: string[];
  chat?: boolean;
  capacity?: number;
  stepsPerSubmit?: number;
  weights?: QuantStorage;
  json?: boolean;
}

export const integer = (name: string, min: number) => (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${value}'`);
  return n;
};
const number = (name: string, ok: (n: number) => boolean, rule: string) => (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !ok(n)) throw new InvalidArgumentError(`${name} must be ${rule}, got '${value}'`);
  return n;
};
export const weightsOption = (value: string): QuantStorage => {
  if (value !== 'q8' && value !== 'q4') throw new InvalidArgumentError(`--weights takes q8 or q4, got '${value.length > 20 ? `${value.slice(0, 20)}…` : value}'`);
  return value;
};
const collect = (value: string, previous: string[] = []) => [...previous, value];
const tokenIds = (value: string): number[] => {
  const ids = value.split(',').map((part) => part.trim());
  if (ids.length === 0 || !ids.every((id) => /^\d+$/.test(id))) {
    throw new InvalidArgumentError(`--prompt-ids must be comma-separated non-negative integers, got '${value.length > 80 ? `${value.slice(0, 80)}…` : value}'`);
  }
  return ids.map(Number);
};

/** Progress on stderr: one rewritten line on a terminal, plain lines otherwise. */
export function progressPrinter(enabled: boolean): { update(e: LoadProgress): void; clear(): void } {
  // bin/strata.mjs pipes stderr through its filter and says whether the terminal behind it is one
  const tty = process.stderr.isTTY || process.env.STRATA_STDERR_IS_TTY === '1';
  let shown = false;
  const t0 = performance.now();
  return {
    update(e) {
      if (!enabled) return;
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      const what =
        e.stage === 'compile'
          ? `compiling ${e.done}/${e.total}${e.detail ? ` (${e.detail})` : ''}`
          : e.stage === 'ready'
            ? 'ready'
            : e.stage === 'warm-up'
              ? `warming up ${e.detail ?? ''} (each runs once: some drivers compile shaders at first use; other buckets then compile when first used)`
            : `loading ${e.stage}${e.detail ? `: ${e.detail}` : ''}`;
      const line = `strata: ${what} [${secs}s]`;
      if (tty) {
        process.stderr.write(`\r\x1b[2K${line}`);
        shown = true;
      } else if (e.stage !== 'compile' || e.done === 0 || e.done === e.total) process.stderr.write(`${line}\n`);
    },
    clear() {
      if (tty && shown) process.stderr.write('\r\x1b[2K');
      shown = false;
    },
  };
}

export function throughputLine(stats: SequenceStats): string {
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  return (
    `${stats.promptTokens} prompt tokens, prefill ${f(stats.prefillTokensPerSecond)} tok/s; ` +
    `${stats.generatedTokens} generated, decode ${f(stats.decodeTokensPerSecond)} tok/s; ` +
    `${stats.submits} submits, ${stats.readbacks} readbacks, ${f(stats.dispatchesPerToken)} dispatches/token ` +
    `(K=${stats.stepsPerSubmit})` +
    (stats.firstRuns.length ? `; first run of ${stats.firstRuns.join(', ')} (not warmed at load: its time includes compiling on drivers that compile late)` : '')
  );
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('Generate text from a prompt on WebGPU (streams text, then throughput figures)')
    .option('--model <dir>', 'model folder (config.json, *.safetensors, tokenizer.json) or a GGUF file (*.gguf)', DEFAULT_MODEL)
    .option('--prompt <text>', 'the prompt')
    .option('--prompt-ids <ids>', 'the prompt as comma-separated token ids (for a model folder without tokenizer.json)', tokenIds)
    .option('--max-new-tokens <n>', 'tokens to generate at most', integer('--max-new-tokens', 1), 64)
    .option('--temperature <t>', '0 for greedy', number('--temperature', (n) => n >= 0, '>= 0'), 0)
    .option('--top-k <k>', 'keep the k most likely tokens (0: off)', integer('--top-k', 0), 0)
    .option('--top-p <p>', 'nucleus sampling mass (1: off)', number('--top-p', (n) => n > 0 && n <= 1, 'in (0, 1]'), 1)
    .option('--min-p <p>', 'drop tokens below p times the most likely (0: off)', number('--min-p', (n) => n >= 0 && n <= 1, 'in [0, 1]'), 0)
    .option('--repetition-penalty <r>', 'HF repetition penalty (1: off)', number('--repetition-penalty', (n) => n > 0, '> 0'), 1)
    .option('--seed <s>', 'RNG seed: the same seed gives the same tokens', integer('--seed', 0))
    .option('--stop <text>', 'stop string (repeatable)', collect)
    .option('--chat', "render the prompt as a user message with the model's chat template")
    .option('--capacity <n>', 'tokens per sequence (prompt + output)', integer('--capacity', 1))
    .option('--steps-per-submit <k>', 'decode steps per GPU submission', integer('--steps-per-submit', 1))
    .option('--weights <q8|q4>', 'block-quantize 16/32-bit linear and embedding weights on load (8-bit, or 4-bit with a min)', weightsOption)
    .option('--json', 'print one JSON object: promptIds, ids, text, finishReason, stats')
    .action(async (options: GenerateCliOptions) => {
      if ((options.prompt === undefined) === (options.promptIds === undefined)) {
        throw new PromptError('pass the prompt as --prompt <text> or as --prompt-ids <ids>, one of the two');
      }
      const prompt = options.promptIds ? { ids: options.promptIds } : options.prompt!;
      const progress = progressPrinter(true);
      const session = await Session.load(options.model, {
        onProgress: (e) => progress.update(e),
        prompt,
        ...(options.chat ? { chat: true } : {}),
        ...(options.capacity !== undefined ? { capacity: options.capacity } : {}),
        ...(options.stepsPerSubmit !== undefined ? { stepsPerSubmit: options.stepsPerSubmit } : {}),
        ...(options.weights ? { weights: options.weights } : {}),
      });
      progress.clear();
      const generation = session.generate(prompt, {
        maxNewTokens: options.maxNewTokens,
        temperature: options.temperature,
        topK: options.topK,
        topP: options.topP,
        minP: options.minP,
        repetitionPenalty: options.repetitionPenalty,
        ...(options.seed !== undefined ? { seed: options.seed } : {}),
        ...(options.stop ? { stop: options.stop } : {}),
        ...(options.chat ? { chat: true } : {}),
      });
      if (options.json) {
        const r = await generation.result();
        const device = session.runner.runtime.strata.adapterInfo;
        console.log(JSON.stringify({ model: options.model, promptIds: r.promptIds, ids: r.ids, text: r.text, finishReason: r.finishReason, stats: r.stats, loadSeconds: session.loadSeconds, device: device.description || device.device }));
        return;
      }
      process.stdout.write(typeof prompt === 'string' ? prompt : session.tokenizer ? session.tokenizer.decode(prompt.ids) : '');
      for await (const piece of generation) process.stdout.write(piece);
      process.stdout.write('\n');
      process.stderr.write(`${throughputLine(generation.stats!)}\n`);
    });
}
