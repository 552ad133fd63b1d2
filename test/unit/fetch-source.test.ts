// Model files over HTTP (runtime/fetchSource.ts) against a local server that logs every request: a two-shard
// checkpoint is read with range requests only, each no larger than a tensor, never a whole shard; the bytes equal
// the file's; a missing file, a server that ignores Range and a shard replaced after its header was read are
// refused with typed errors.
import * as fs from 'node:fs';
import { type Server, createServer } from 'node:http';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SourceReadError } from '../../base/modelSource.ts';
import { type StaticServer, serveStatic } from '../../cli/staticServer.ts';
import { loadConfig } from '../../models/config.ts';
import { FetchSource } from '../../base/fetchSource.ts';
import { SafetensorsError, openSafetensors } from '../../base/safetensors.ts';
import { Tokenizer } from '../../runtime/tokenizer.ts';
import { type ShardedModel, writeShardedTinyModel } from '../helpers/shardedModel.ts';

let model: ShardedModel;
let server: StaticServer;

beforeAll(async () => {
  model = await writeShardedTinyModel();
  server = await serveStatic({ '/model/': model.folder });
});

afterAll(async () => {
  await server?.close();
  model?.remove();
});

describe('a sharded checkpoint over HTTP', () => {
  test('every tensor equals the file, read with range requests no larger than a tensor, never a whole shard', async () => {
    const source = new FetchSource(`${server.url}/model`);
    const local = await openSafetensors(model.folder);
    const remote = await openSafetensors(source);
    expect(remote.tensorNames().sort()).toEqual(local.tensorNames().sort());
    server.log.length = 0;
    for (const name of local.tensorNames()) {
      const [got, want] = [(await remote.readTensor(name)).bytes, (await local.readTensor(name)).bytes];
      expect(Buffer.from(got).equals(Buffer.from(want)), name).toBe(true); // toEqual walks megabytes element by element
    }
    const shardSizes = Object.fromEntries(model.shards.map((s) => [`/model/${s}`, fs.statSync(path.join(model.folder, s)).size]));
    const shardReads = server.log.filter((r) => r.url in shardSizes && r.method === 'GET');
    expect(shardReads).toHaveLength(local.tensorNames().length);
    for (const read of shardReads) {
      expect(read.range, read.url).toMatch(/^bytes=\d+-\d+$/);
      expect(read.status).toBe(206);
      expect(read.bytes).toBeLessThanOrEqual(model.largestTensorBytes);
      expect(read.bytes).toBeLessThan(shardSizes[read.url]!);
    }
    // both shards were read, and what was read adds up to the tensors' bytes exactly (nothing twice)
    expect(new Set(shardReads.map((r) => r.url)).size).toBe(2);
    const tensorBytes = local.tensorNames().reduce((sum, name) => sum + local.info(name).byteLength, 0);
    expect(shardReads.reduce((sum, r) => sum + r.bytes, 0)).toBe(tensorBytes);
    await Promise.all([local.close(), remote.close()]);
  });

  test('config and tokenizer load from the same source; list() finds the shards through the index', async () => {
    const source = new FetchSource(`${server.url}/model/`);
    expect((await loadConfig(source)).modelType).toBe('granitemoehybrid');
    expect((await Tokenizer.load(source)).encode('def f():').length).toBeGreaterThan(0);
    expect((await source.list()).sort()).toEqual(['config.json', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json', ...model.shards].sort());
  });

  test('a missing file is named with its URL; a shard rewritten after its header was read is refused', async () => {
    const source = new FetchSource(`${server.url}/model`);
    const missing = await source.readText('absent.json', 1000).then(() => null, (e: unknown) => e);
    expect(missing).toBeInstanceOf(SourceReadError);
    expect(missing).toMatchObject({ file: `${server.url}/model/absent.json`, reason: 'HTTP 404 (not found)', missing: true });
    const checkpoint = await openSafetensors(source);
    const shard = path.join(model.folder, model.shards[0]!);
    const name = checkpoint.tensorNames().find((n) => checkpoint.info(n).file.endsWith(model.shards[0]!))!;
    const later = new Date(fs.statSync(shard).mtimeMs + 5000);
    fs.utimesSync(shard, later, later); // same bytes, new version (ETag)
    await expect(checkpoint.readTensor(name)).rejects.toThrow(/changed since its header was read/);
  });
});

test('a server that ignores Range is refused after the first read, not downloaded whole', async () => {
  const file = path.join(model.folder, model.shards[1]!);
  const size = fs.statSync(file).size;
  let sent = 0;
  const plain: Server = createServer((request, response) => {
    if (request.url !== '/model.safetensors') return void (response.writeHead(404), response.end());
    response.writeHead(200, { 'Content-Length': size, ETag: '"v1"' });
    if (request.method === 'HEAD') return void response.end();
    const stream = fs.createReadStream(file);
    stream.on('data', (chunk) => (sent += chunk.length));
    stream.pipe(response);
  });
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(plain.address() as { port: number }).port}`;
  try {
    const error = await openSafetensors(new FetchSource(url)).then(() => null, (e: unknown) => e);
    expect(error).toBeInstanceOf(SafetensorsError);
    expect((error as Error).message).toBe(`${url}/model.safetensors: cannot open (the server answered a range request with HTTP 200, not 206: it must support Range requests)`);
    expect(sent).toBeLessThan(size); // the body was cancelled, not read
  } finally {
    plain.closeAllConnections();
    await new Promise((resolve) => plain.close(resolve));
  }
});
