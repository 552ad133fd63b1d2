// The package as a user gets it: `npm pack` (which builds dist/ with scripts/build.mjs), the tarball installed into
// an empty folder, `import { Session } from 'strata'` in a plain .mjs file generating tiny-granite-code's reference
// tokens, the `strata` command answering, and importing either entry doing nothing (no device, no output, no timer).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from 'vitest';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const HANG_GUARD = { timeout: 1_800_000 };
let folder: string;

beforeAll(async () => {
  folder = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-package-'));
  // prepack builds dist/ (esbuild bundles, tsc declarations)
  const packed = await run('npm', ['pack', '--json', '--pack-destination', folder], { cwd: ROOT, maxBuffer: 64 << 20 });
  const tarball = path.join(folder, (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename);
  const app = path.join(folder, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  // dependencies come from npm's cache, filled by this checkout's own install
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app, maxBuffer: 64 << 20 });
}, 1_800_000);

afterAll(() => fs.rmSync(folder, { recursive: true, force: true }));

test('the tarball holds the built entries, their types, the CLI and the tiny model, and no TypeScript sources', HANG_GUARD, () => {
  const installed = path.join(folder, 'app/node_modules/strata');
  for (const file of ['dist/index.js', 'dist/browser.js', 'dist/cli.js', 'dist/types/index.d.ts', 'dist/types/browser.d.ts', 'bin/strata.mjs', 'assets/models/tiny-granite-code/model.safetensors'])
    expect(fs.existsSync(path.join(installed, file)), file).toBe(true);
  expect(fs.existsSync(path.join(installed, 'runtime'))).toBe(false);
  expect(fs.readFileSync(path.join(installed, 'dist/types/index.d.ts'), 'utf8')).toContain("from './runtime/session.js'");
});

test('importing strata and strata/browser runs nothing: no output, and the process exits at once', HANG_GUARD, async () => {
  const app = path.join(folder, 'app');
  const script = "const a = await import('strata'); const b = await import('strata/browser'); if (typeof a.Session.load !== 'function' || typeof b.FetchSource !== 'function') process.exitCode = 3;";
  const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: app });
  expect(stdout).toBe('');
  expect(stderr).toBe('');
});

test("a plain .mjs importing { Session } from 'strata' generates the tiny model's reference tokens", HANG_GUARD, async () => {
  const app = path.join(folder, 'app');
  fs.writeFileSync(
    path.join(app, 'generate.mjs'),
    `import { Session } from 'strata';
import { readFileSync } from 'node:fs';
const dir = new URL('./node_modules/strata/assets/models/tiny-granite-code/', import.meta.url).pathname;
const ref = JSON.parse(readFileSync(dir + 'reference.json', 'utf8')).greedy[0];
const want = ref.output_ids.slice(ref.prompt_ids.length);
const session = await Session.load(dir, { slots: 1, capacity: 64, prefillChunks: [16], decodeRows: [1] });
const result = await session.generate(ref.prompt, { maxNewTokens: want.length }).result();
await session.close();
console.log(JSON.stringify({ ids: result.ids, want }));
process.exit(0);
`,
  );
  const { stdout } = await run(process.execPath, ['generate.mjs'], { cwd: app, maxBuffer: 16 << 20 });
  const { ids, want } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { ids: number[]; want: number[] };
  expect(want.length).toBeGreaterThan(0);
  expect(ids).toEqual(want);
});

test('the installed strata command runs from dist/', HANG_GUARD, async () => {
  const { stdout } = await run(path.join(folder, 'app/node_modules/.bin/strata'), ['--help'], { cwd: path.join(folder, 'app') });
  expect(stdout).toContain('Usage: strata');
});

test('strata compile without ts-morph (an optional peer dependency) says in one line what to install, before compiling', HANG_GUARD, async () => {
  const app = path.join(folder, 'app');
  expect(fs.existsSync(path.join(app, 'node_modules/ts-morph'))).toBe(false);
  const model = path.join(app, 'node_modules/strata/assets/models/tiny-granite-code');
  const result = await run(path.join(app, 'node_modules/.bin/strata'), ['compile', model, '--out', 'model.strata.ts'], { cwd: app }).then(
    () => ({ code: 0, stderr: '' }),
    (error: { code: number; stderr: string }) => error,
  );
  expect(result.code).toBe(1);
  expect(result.stderr.trim()).toBe('strata: writing an AOT module (strata compile) needs ts-morph, an optional peer dependency of strata that is not installed: run `npm install ts-morph`');
  expect(fs.existsSync(path.join(app, 'model.strata.ts'))).toBe(false);
});
