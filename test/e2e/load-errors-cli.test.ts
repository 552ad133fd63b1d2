// User errors through the CLI (issue 10): each is one line on stderr ("strata: ..."), no stack trace, nothing on
// stdout, and refused before weights are uploaded or anything compiled (no 'loading weights' progress line).
// Dawn's adapter notes stay out of stderr unless --verbose; `strata doctor` lists them.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/strata.mjs');
const TINY = path.join(ROOT, 'assets/models/tiny-granite-code');
const run = promisify(execFile);
const DAWN_NOTE = /^Warning: \w+ artificially reduced/m;
// Hang guard only: each command below exits in a few seconds on an idle 2-core machine.
const GUARD = { timeout: 120_000 };

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-cli-errors-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function strata(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT, maxBuffer: 1 << 24, timeout: 100_000 });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

/** A copy of tiny-granite-code (weights linked, not copied) with some files left out and the config edited. */
async function tinyVariant(name: string, options: { without?: string[]; config?: (c: Record<string, unknown>) => void } = {}): Promise<string> {
  const dir = path.join(tmp, name);
  await fsp.mkdir(dir);
  for (const file of await fsp.readdir(TINY)) {
    if (options.without?.includes(file)) continue;
    if (file === 'config.json' && options.config) {
      const config = JSON.parse(await fsp.readFile(path.join(TINY, file), 'utf8'));
      options.config(config);
      await fsp.writeFile(path.join(dir, file), JSON.stringify(config));
    } else await fsp.symlink(path.join(TINY, file), path.join(dir, file));
  }
  return dir;
}

/** The run failed with exactly one `strata: ...` line after the progress lines, no stack, and never reached the weights. */
function expectOneLineRefusal(result: { stdout: string; stderr: string; code: number }, message: string | RegExp): void {
  expect(result.code, result.stderr).toBe(1);
  expect(result.stdout).toBe('');
  const lines = result.stderr.trimEnd().split('\n');
  const last = lines[lines.length - 1]!;
  if (typeof message === 'string') expect(last).toBe(`strata: ${message}`);
  else expect(last).toMatch(message);
  expect(result.stderr).not.toMatch(/^\s+at /m);
  expect(result.stderr).not.toContain('loading weights');
  expect(result.stderr).not.toContain('validation');
  expect(result.stderr).not.toMatch(DAWN_NOTE);
}

describe('strata generate refuses bad input in one line, before loading weights', () => {
  test('an empty prompt', GUARD, async () => {
    expectOneLineRefusal(await strata(['generate', '--prompt', '', '--max-new-tokens', '2']), 'the prompt "" encodes to no tokens: pass some text');
  });

  test('a folder without tokenizer.json: the advice (--prompt-ids) works from the CLI', GUARD, async () => {
    const dir = await tinyVariant('no-tokenizer', { without: ['tokenizer.json', 'tokenizer_config.json'] });
    const refused = await strata(['generate', '--model', dir, '--prompt', 'hello']);
    expectOneLineRefusal(refused, /has no tokenizer\.json: pass the prompt as token ids \(`strata generate --prompt-ids 1,2,3`.*Hugging Face repository/);
    // following the advice passes the tokenizer check: here the next check (capacity) is what stops it
    const followed = await strata(['generate', '--model', dir, '--prompt-ids', '1,2,3,4,5', '--capacity', '4']);
    expectOneLineRefusal(followed, /the prompt has 5 tokens but a sequence holds at most 4/);
    const outside = await strata(['generate', '--model', dir, '--prompt-ids', '1,99999']);
    expectOneLineRefusal(outside, "prompt token 99999 (at 1) is not an id of this model's vocabulary (0..2047)");
  });

  // yarn, linear, dynamic, llama3 and longrope are supported (models/rope.ts); an unknown type is refused by name
  test('an unknown rope_type names the field', GUARD, async () => {
    const dir = await tinyVariant('ntk', { config: (c) => (c.rope_parameters = { rope_type: 'ntk-by-parts', rope_theta: 10000, factor: 4 }) });
    expectOneLineRefusal(
      await strata(['generate', '--model', dir, '--prompt', 'hi']),
      /config\.json: rope_parameters\.rope_type: rope type "ntk-by-parts" is not supported \(supported: default, linear, dynamic, yarn, llama3, longrope\)$/,
    );
  });

  test('a prompt longer than --capacity, before the device is even opened', GUARD, async () => {
    const result = await strata(['generate', '--prompt', 'def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)', '--capacity', '8']);
    expectOneLineRefusal(result, /^strata: the prompt has \d+ tokens but a sequence holds at most 8 \(the session's capacity\)/);
    expect(result.stderr).not.toContain('loading device');
  });

  test('--capacity 100000000: a typed error on stderr, nothing from Dawn on stdout, even with --json', GUARD, async () => {
    const result = await strata(['generate', '--prompt', 'hi', '--capacity', '100000000', '--json']);
    expectOneLineRefusal(result, /^strata: layer \d+'s K cache would need 25600000000 bytes in one GPU buffer, but this adapter binds at most \d+: lower the capacity \(now 100000000\) or the slots \(now 1\)$/);
  });

  test('a model.safetensors that is a FIFO is refused when opened, not waited on', GUARD, async () => {
    const dir = await tinyVariant('fifo', { without: ['model.safetensors'] });
    await run('mkfifo', [path.join(dir, 'model.safetensors')]);
    const result = await strata(['generate', '--model', dir, '--prompt', 'hi', '--capacity', '16']);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr.trimEnd().split('\n').at(-1)).toMatch(/^strata: .*model\.safetensors: cannot open \(is a named pipe \(FIFO\), not a regular file\)$/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
    expect(result.stderr).not.toContain('compiling');
  });
});

describe("Dawn's adapter notes", () => {
  test('are kept out of normal stderr, shown with --verbose, and listed by strata doctor', GUARD, async () => {
    const args = ['generate', '--prompt', 'hi', '--capacity', '100000000'];
    const quiet = await strata(args);
    const verbose = await strata([...args, '--verbose']);
    const doctor = await strata(['doctor', '--json']);
    expect(doctor.code, doctor.stderr).toBe(0);
    const listed: string[] = JSON.parse(doctor.stdout).diagnostics;
    expect(quiet.stderr).not.toMatch(DAWN_NOTE);
    expect(doctor.stderr).not.toMatch(DAWN_NOTE);
    const shown = verbose.stderr.split('\n').filter((line) => DAWN_NOTE.test(line));
    expect(shown).toEqual(listed.filter((line) => DAWN_NOTE.test(line)));
    // the verbose run differs from the quiet one by those lines only
    expect(verbose.stderr.split('\n').filter((line) => !DAWN_NOTE.test(line)).map((l) => l.replace(/\[[\d.]+s\]/, ''))).toEqual(
      quiet.stderr.split('\n').map((l) => l.replace(/\[[\d.]+s\]/, '')),
    );
  });
});
