// `strata generate` as a user runs it: JSON output with the reference ids of tiny-granite-code, streamed text
// with a throughput line, and the message for a missing model folder.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/strata.mjs');
const reference = JSON.parse(fs.readFileSync(path.join(ROOT, 'assets/models/tiny-granite-code/reference.json'), 'utf8'));
const run = promisify(execFile);

async function strata(args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT, maxBuffer: 1 << 24, timeout: 1_700_000, env: { ...process.env, ...env } });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

test('--json prints promptIds, the generated ids, text and stats; greedy ids equal the reference', async () => {
  const g = reference.greedy[0];
  const r = await strata(['generate', '--prompt', g.prompt, '--max-new-tokens', '9', '--capacity', '64', '--json']);
  expect(r.code, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout);
  expect(out.promptIds).toEqual(g.prompt_ids);
  expect(out.ids).toEqual(g.output_ids.slice(g.prompt_ids.length, g.prompt_ids.length + 9));
  expect(g.text.startsWith(g.prompt + out.text)).toBe(true);
  expect(out.finishReason).toBe('length');
  // the first token comes with the prefill; 8 decode steps are submissions of 1, 2, 4 and 1 steps (K = 8, from an
  // idle GPU: submissionSteps), each read back once
  expect(out.stats.readbacks).toBe(4);
  expect(out.stats.submits).toBeGreaterThanOrEqual(2);
  expect(out.stats.decodeTokensPerSecond).toBeGreaterThan(0);
  expect(out.stats.dispatchesPerToken).toBeGreaterThan(0);
});

test('streams the text to stdout and a throughput line to stderr', async () => {
  const g = reference.greedy[1];
  const r = await strata(['generate', '--prompt', g.prompt, '--max-new-tokens', '6', '--capacity', '64']);
  expect(r.code, r.stderr).toBe(0);
  expect(g.text.startsWith(r.stdout.replace(/\n$/, ''))).toBe(true);
  expect(r.stdout.length).toBeGreaterThan(g.prompt.length);
  expect(r.stderr).toMatch(/prefill [\d.]+ tok\/s; 6 generated, decode [\d.]+ tok\/s; \d+ submits, 3 readbacks/); // 5 decode steps: 1, 2, 2
});

test('a missing model folder is a one-line error that says what to pass', async () => {
  const r = await strata(['generate', '--model', '/nonexistent/model', '--prompt', 'x']);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/^strata: model folder '\/nonexistent\/model' does not exist .*Pass the folder of a Hugging Face checkpoint/);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
});

test('a bad --weights value is refused by name; a file that is not GGUF is a one-line error', async () => {
  const bad = await strata(['generate', '--weights', 'q3', '--prompt', 'x']);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/^error: option '--weights <q8\|q4>' argument 'q3' is invalid. --weights takes q8 or q4, got 'q3'/); // then commander's usage
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cli-'));
  try {
    fs.writeFileSync(path.join(dir, 'model.gguf'), 'plain text, not GGUF');
    const notGguf = await strata(['generate', '--model', path.join(dir, 'model.gguf'), '--prompt', 'x']);
    expect(notGguf.code).toBe(1);
    expect(notGguf.stderr).toMatch(/^strata: .*model\.gguf: not a readable GGUF file/);
    expect(notGguf.stderr.trim().split('\n')).toHaveLength(1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('no adapter: the message says how to get one', async () => {
  // Vulkan's loader pointed at a driver file that does not exist: Dawn finds no adapter
  const r = await strata(['generate', '--prompt', 'x'], { VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' });
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/strata: No WebGPU adapter: .*Fix: /);
});
