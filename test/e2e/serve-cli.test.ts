// `strata serve` from the command line: a bad --chat-template is one line on stderr before anything loads; a real
// start serves /v1/models on the port it prints and exits cleanly on SIGTERM.
import { execFile, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/strata.mjs');
const run = promisify(execFile);

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-serve-cli-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function strata(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: 100_000 });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

test('a missing or unparsable chat template is refused in one line, before the model loads', async () => {
  const missing = await strata(['serve', '--chat-template', path.join(tmp, 'missing.jinja')]);
  expect(missing.code).toBe(1);
  expect(missing.stderr.trim()).toMatch(/^strata: --chat-template .*missing\.jinja: ENOENT$/);
  const broken = path.join(tmp, 'broken.jinja');
  await fsp.writeFile(broken, '{% for m in %}');
  const bad = await strata(['serve', '--chat-template', broken]);
  expect(bad.code).toBe(1);
  expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  expect(bad.stderr).toMatch(/broken\.jinja: not a Jinja template/);
  expect(bad.stderr).not.toMatch(/loading|compiling/);
});

test('serves /v1/models on the printed address and exits 0 on SIGTERM', async () => {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--slots', '1', '--capacity', '64', '--prefix-cache', '0'], { cwd: ROOT });
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (bytes: Buffer) => {
      stderr += bytes.toString();
      const found = /serving 'tiny-granite-code' at (http:\/\/[^\s]+)\/v1/.exec(stderr);
      if (found) resolve(found[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${stderr}`)));
  });
  const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
  expect(models.data.map((m) => m.id)).toEqual(['tiny-granite-code']);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
});
