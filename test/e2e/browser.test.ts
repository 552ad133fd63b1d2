// The browser bundle in headless Chromium (WebGPU on SwiftShader): the demo page loads tiny-granite-code from a
// local server, written as a two-shard checkpoint read with range requests, and generates greedily. The ids equal
// reference.json, traced and compiled in the page, and from an AOT module compiled in Node (no tracing or compiling
// in the page). One page load per case; time to first token of both is printed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { emitAotModule } from '../../compiler/emitModule.ts';
import { type DemoServer, startDemoServer } from '../../cli/serveDemo.ts';
import { compileModel } from '../../runtime/compileAot.ts';
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

interface DemoState {
  stage: string;
  error?: string;
  aot?: boolean;
  /** Programs traced and compiled in the page. */
  compiledPrograms?: number;
  loadSeconds?: number;
  timeToFirstTokenSeconds?: number;
  result?: { promptIds: number[]; ids: number[]; stats: { readbacks: number; dispatchesPerToken: number } };
}

let model: ShardedModel;
let server: DemoServer;
let browser: Browser;
let aotFolder: string;
const figures: Record<string, DemoState> = {};

beforeAll(async () => {
  model = await writeShardedTinyModel();
  aotFolder = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-aot-'));
  // the page's session shape: slots 1, capacity 128, prefill chunk 16, decode rows 1 (examples/browser/demo.js)
  const aot = await compileModel(model.folder, { slots: 1, capacity: 128, prefillChunks: [16], decodeRows: [1] });
  fs.writeFileSync(path.join(aotFolder, 'model.strata.js'), await emitAotModule(aot, { from: 'tiny-granite-code', language: 'js' }));
  server = await startDemoServer({ model: model.folder, extra: { '/aot/': aotFolder } });
  browser = await launchChromium();
}, 1_800_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  model?.remove();
  if (aotFolder) fs.rmSync(aotFolder, { recursive: true, force: true });
  const line = (name: string) => `${name}: load ${figures[name]?.loadSeconds?.toFixed(1)} s + first token ${figures[name]?.timeToFirstTokenSeconds?.toFixed(2)} s`;
  if (figures.traced && figures.aot) console.log(`headless Chromium (SwiftShader), tiny-granite-code: ${line('traced')}; ${line('aot')}`);
});

/**
 * Runs in the page after a generation: the session's slot 0 saved to OPFS, cleared, restored, compared. A string, not
 * a function: vitest rewrites `import()` in the test's own code, which the page would then not understand.
 */
const OPFS_ROUND_TRIP = `(async () => {
  const strata = await import('/strata/browser.js');
  const memory = window.strataDemo.session.runner.caches;
  const length = memory.lengths[0];
  const before = await memory.readSlot(0);
  await strata.saveMemoryToOpfs(memory, 'strata-test.safetensors', { slots: [0] });
  memory.clear(0);
  const restored = await strata.restoreMemoryFromOpfs(memory, 'strata-test.safetensors');
  const after = await memory.readSlot(0);
  const same = before.size === after.size && [...before].every(([name, bytes]) => after.get(name)?.every((b, i) => b === bytes[i]) === true);
  return { length, same, restored };
})()`;

async function runDemo(query: Record<string, string>, inPage?: string): Promise<DemoState & { inPage?: unknown }> {
  const page = await browser.newPage();
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

test('traced in the page: the ids equal reference.json, read from two shards with range requests only', HANG_GUARD, async () => {
  server.log.length = 0;
  const state = (figures.traced = await runDemo({}));
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
});

test('from an AOT module: the same ids, with nothing traced or compiled in the page; memory saved to OPFS and restored', HANG_GUARD, async () => {
  const state = (figures.aot = await runDemo({ aot: '/aot/model.strata.js' }, OPFS_ROUND_TRIP));
  const length = reference.prompt_ids.length + wanted.length - 1; // the last token is sampled, not yet fed
  expect(state.inPage).toEqual({ length, same: true, restored: { file: 'opfs/strata-test.safetensors', sequences: [{ from: 0, into: 0, length }] } });
  expect(state.aot).toBe(true);
  expect(state.compiledPrograms).toBe(0);
  expect(state.result!.ids).toEqual(wanted);
  expect(server.log.some((r) => r.url === '/aot/model.strata.js' && r.status === 200)).toBe(true);
});
