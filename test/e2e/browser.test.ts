// The browser bundle in headless Chromium (WebGPU on SwiftShader): the demo page loads tiny-granite-code from a
// local server, written as a two-shard checkpoint read with range requests, and generates greedily. The ids equal
// reference.json, traced and compiled in the page, and from an AOT module compiled in Node for the page's adapter
// profile (no tracing or compiling in the page). The traced page saves its session (to an OPFS file handle and as a
// Blob) and continues; the AOT page's fresh session restores both and continues with the same tokens. One page
// load per case; load time and time to first token of both are printed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { emitAotModule } from '../../compiler/emitModule.ts';
import { type DemoServer, startDemoServer } from '../../cli/serveDemo.ts';
import { compileModel } from '../../runtime/compileAot.ts';
import type { AdapterProfile } from '../../runtime/device.ts';
import { launchChromium } from '../helpers/chromium.ts';
import { type ShardedModel, TINY_MODEL, writeShardedTinyModel } from '../helpers/shardedModel.ts';

interface Greedy {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
}
const reference = (JSON.parse(fs.readFileSync(path.join(TINY_MODEL, 'reference.json'), 'utf8')) as { greedy: Greedy[] }).greedy[0]!;
const wanted = reference.output_ids.slice(reference.prompt_ids.length);
const HANG_GUARD = { timeout: 1_800_000 };
/** Tokens generated after a save, and after each restore. */
const CONTINUE = 6;

interface DemoState {
  stage: string;
  error?: string;
  aot?: boolean;
  aotTarget?: string;
  /** Programs traced and compiled in the page. */
  compiledPrograms?: number;
  loadSeconds?: number;
  timeToFirstTokenSeconds?: number;
  result?: { promptIds: number[]; ids: number[]; stats: { readbacks: number; dispatchesPerToken: number } };
}

let model: ShardedModel;
let server: DemoServer;
let browser: Browser;
/** One context for both pages, so that the AOT page finds what the traced page saved in OPFS. */
let context: BrowserContext;
let aotFolder: string;
let profile: AdapterProfile;
const figures: Record<string, DemoState> = {};

beforeAll(async () => {
  model = await writeShardedTinyModel();
  aotFolder = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-aot-'));
  server = await startDemoServer({ model: model.folder, extra: { '/aot/': aotFolder } });
  browser = await launchChromium();
  context = await browser.newContext();
  // the page's adapter profile, as a user would save it from the demo page for `strata compile --target`
  const page = await context.newPage();
  await page.goto(server.page);
  profile = (await page.evaluate(ADAPTER_PROFILE)) as AdapterProfile;
  await page.close();
  // the page's session shape: slots 1, capacity 128, prefill chunk 16, decode rows 1 (examples/browser/demo.js)
  const aot = await compileModel(model.folder, { slots: 1, capacity: 128, prefillChunks: [16], decodeRows: [1], targets: [profile] });
  fs.writeFileSync(path.join(aotFolder, 'model.strata.js'), await emitAotModule(aot, { from: 'tiny-granite-code', language: 'js' }));
}, 1_800_000);

afterAll(async () => {
  await context?.close();
  await browser?.close();
  await server?.close();
  model?.remove();
  if (aotFolder) fs.rmSync(aotFolder, { recursive: true, force: true });
  const line = (name: string) => `${name}: load ${figures[name]?.loadSeconds?.toFixed(1)} s + first token ${figures[name]?.timeToFirstTokenSeconds?.toFixed(2)} s`;
  if (figures.traced && figures.aot) console.log(`headless Chromium (SwiftShader), tiny-granite-code: ${line('traced')}; ${line('aot')}`);
});

// Scripts that run in the page: strings, not functions, because vitest rewrites `import()` in the test's own code,
// which the page would then not understand.
const ADAPTER_PROFILE = `(async () => {
  const strata = await import('/strata/browser.js');
  return strata.adapterProfile(await strata.getSharedDevice());
})()`;

/** After the traced page's generation: slot 0 saved to an OPFS file handle and as a Blob, then continued. */
const SAVE_AND_CONTINUE = `(async () => {
  const session = window.strataDemo.session;
  const root = await navigator.storage.getDirectory();
  const saved = await session.save(await root.getFileHandle('strata-test.safetensors', { create: true }));
  const blob = await session.saveToBlob();
  const writable = await (await root.getFileHandle('strata-test-blob.safetensors', { create: true })).createWritable();
  await writable.write(blob);
  await writable.close();
  const next = (await session.continue(0, { maxNewTokens: ${CONTINUE} }).result()).ids;
  return { saved, blobBytes: blob.size, next };
})()`;

/** In the AOT page's fresh session, moved on first: restored from the handle, continued; from the File, continued. */
const RESTORE_AND_CONTINUE = `(async () => {
  const session = window.strataDemo.session;
  const root = await navigator.storage.getDirectory();
  await session.continue(0, { maxNewTokens: ${CONTINUE} }).result();
  const fromHandle = await session.restore(await root.getFileHandle('strata-test.safetensors'));
  const length = session.length(0);
  const afterHandle = (await session.continue(0, { maxNewTokens: ${CONTINUE} }).result()).ids;
  const fromBlob = await session.restore(await (await root.getFileHandle('strata-test-blob.safetensors')).getFile());
  const afterBlob = (await session.continue(0, { maxNewTokens: ${CONTINUE} }).result()).ids;
  return { fromHandle, length, afterHandle, fromBlob, afterBlob };
})()`;

async function runDemo(query: Record<string, string>, inPage?: string): Promise<DemoState & { inPage?: unknown }> {
  const page = await context.newPage();
  const messages: string[] = [];
  page.on('pageerror', (error) => messages.push(`page error: ${error.message}`));
  page.on('console', (message) => message.type() === 'error' && messages.push(`console: ${message.text()}`));
  try {
    const search = new URLSearchParams({ model: '/model/', prompt: reference.prompt, max: String(wanted.length), run: '1', ...query });
    await page.goto(`${server.page}?${search}`);
    await page.waitForFunction(() => ['done', 'error'].includes((window as unknown as { strataDemo: DemoState }).strataDemo.stage), undefined, { timeout: 0, polling: 500 });
    const state = await page.evaluate(() => {
      const { session: _session, ...rest } = (window as unknown as { strataDemo: DemoState & { session?: unknown } }).strataDemo;
      return rest;
    });
    expect(state.error, messages.join('\n')).toBeUndefined();
    return { ...state, ...(inPage ? { inPage: await page.evaluate(inPage) } : {}) };
  } finally {
    await page.close();
  }
}

let savedRun: { saved: { file: string; bytes: number; sequences: { slot: number; length: number }[] }; blobBytes: number; next: number[] };

test('traced in the page: the ids equal reference.json, read from two shards with range requests only; the session saved', HANG_GUARD, async () => {
  server.log.length = 0;
  const state = (figures.traced = await runDemo({}, SAVE_AND_CONTINUE));
  expect(state.aot).toBe(false);
  expect(state.compiledPrograms).toBe(3); // prefill 16, decode greedy and sampling
  expect(state.result!.promptIds).toEqual(reference.prompt_ids);
  expect(state.result!.ids).toEqual(wanted);
  const shardReads = server.log.filter((r) => model.shards.some((s) => r.url === `/model/${s}`) && r.method === 'GET');
  expect(new Set(shardReads.map((r) => r.url)).size).toBe(2);
  for (const read of shardReads) {
    expect(read.range, read.url).toMatch(/^bytes=\d+-\d+$/);
    expect(read.status).toBe(206);
    expect(read.bytes).toBeLessThanOrEqual(model.largestTensorBytes);
  }
  savedRun = state.inPage as typeof savedRun;
  const length = reference.prompt_ids.length + wanted.length - 1; // the last token is sampled, not yet fed
  expect(savedRun.saved).toMatchObject({ file: 'strata-test.safetensors', sequences: [{ slot: 0, length }] });
  expect(savedRun.blobBytes).toBe(savedRun.saved.bytes);
  expect(savedRun.next).toHaveLength(CONTINUE);
});

test('from an AOT module for this adapter: the same ids, nothing traced or compiled; a fresh session restores the saved one and continues alike', HANG_GUARD, async () => {
  const state = (figures.aot = await runDemo({ aot: '/aot/model.strata.js' }, RESTORE_AND_CONTINUE));
  expect(state.aot).toBe(true);
  expect(state.aotTarget).toBe(profile.name);
  expect(state.compiledPrograms).toBe(0);
  expect(state.result!.ids).toEqual(wanted);
  expect(server.log.some((r) => r.url === '/aot/model.strata.js' && r.status === 200)).toBe(true);
  const length = savedRun.saved.sequences[0]!.length;
  expect(state.inPage).toEqual({
    fromHandle: { file: 'opfs/strata-test.safetensors', sequences: [{ from: 0, into: 0, length }] },
    length,
    afterHandle: savedRun.next,
    fromBlob: { file: 'blob/strata-test-blob.safetensors', sequences: [{ from: 0, into: 0, length }] },
    afterBlob: savedRun.next,
  });
});
