// `strata parity` as a user runs it on the llama fixture: three passing checks and the decode program it ran (the
// separate q/k/v matvecs on this software adapter; the attention computing them with STRATA_ATTN_PROJECTION=1, as
// GPUs do by default), and a failing check's line and exit code when the tolerance is below what f32 reaches.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/strata.mjs');
const run = promisify(execFile);

async function parity(args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; code: number }> {
  try {
    const { stdout } = await run(process.execPath, [BIN, 'parity', 'test/fixtures/hf/llama', ...args], { cwd: ROOT, timeout: 600_000, env: { ...process.env, ...env } });
    return { stdout, code: 0 };
  } catch (error) {
    const e = error as { stdout?: string; code?: number };
    return { stdout: e.stdout ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

test('the llama fixture passes and says which decode program ran', async () => {
  const r = await parity([]);
  expect(r.code).toBe(0);
  expect(r.stdout.split('\n').filter((l) => l.startsWith('PASS'))).toHaveLength(3);
  expect(r.stdout).toContain('info  one-token decode program: 16 kernels (matvec x13, attention/decode x2, scatter x1)');
});

test('with STRATA_ATTN_PROJECTION=1 the attentions compute their q/k/v: the 3 matvecs of each layer go', async () => {
  const r = await parity([], { STRATA_ATTN_PROJECTION: '1' });
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('info  one-token decode program: 10 kernels (attention/decode+qkv x2, matvec x7, scatter x1)');
});

test('a tolerance below f32 rounding fails the logit checks: FAIL lines and exit code 1', async () => {
  const r = await parity(['--atol', '1e-12']);
  expect(r.code).toBe(1);
  expect(r.stdout).toMatch(/^FAIL {2}prefill logits: max abs [0-9.e+-]+, max rel [0-9.e+-]+, tolerance 1e-12$/m);
  expect(r.stdout).toMatch(/^PASS {2}greedy tokens: identical$/m);
});
