// The session's state table: every buffer a memory owns is an entry with a behaviour per operation, and
// buffer keys are produced in one place (caches/bufferKeys.ts), checked here over the sources.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { bufferKey } from '../../caches/bufferKeys.ts';
import { type MemorySpec, withKvPolicies } from '../../caches/spec.ts';
import { StateTable, memoryStateEntries } from '../../caches/stateTable.ts';
import { generatorStateEntries } from '../../runtime/stepPrograms.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');

// a hybrid: full attention, a sliding window, a recurrent layer, a layer reading layer 0's KV
const spec: MemorySpec = [
  { kv: { kvHeads: 1, headDim: 4 }, states: [] },
  { kv: { kvHeads: 1, headDim: 4, window: 4 }, states: [] },
  { states: [{ name: 'conv', shape: [3, 2] }] },
  { kv: { kvHeads: 1, headDim: 4, sharesWith: 0 }, states: [] },
];

describe('state table', () => {
  test('one entry per buffer, memory and generator, with its behaviour under every operation', () => {
    const table = new StateTable(memoryStateEntries(spec, { slots: 2, capacity: 16, maxChunk: 4 }, 2));
    for (const e of generatorStateEntries({ slots: 2, vocab: 5, K: 2 })) table.add(e);
    expect(table.print()).toMatchInlineSnapshot(`
      "buffer                shape       owner      clear      fork    keep       rollback       save       restore
      state:L0.k            f32(32,4)   memory     masked     copy    masked     masked         saved      written
      state:L0.v            f32(32,4)   memory     masked     copy    masked     masked         saved      written
      state:L1.k            f32(14,4)   memory     masked     copy    masked     from snapshot  saved      written
      state:L1.v            f32(14,4)   memory     masked     copy    masked     from snapshot  saved      written
      snapshot:L1.k         f32(14,4)   memory     forgotten  copy    forgotten  kept           not saved  forgotten
      snapshot:L1.v         f32(14,4)   memory     forgotten  copy    forgotten  kept           not saved  forgotten
      state:L2.conv         f32(2,3,2)  memory     zero       copy    zero       from snapshot  saved      written
      snapshot:L2.conv      f32(2,3,2)  memory     forgotten  copy    forgotten  kept           not saved  forgotten
      state:pos             i32(2)      memory     zero       copy    zero       host write     saved      written
      snapshot:pos          i32(2)      memory     forgotten  copy    forgotten  kept           not saved  forgotten
      memory:scratch        f32(64)     memory     shared     shared  shared     shared         not saved  shared
      memory:zero           f32(6)      memory     shared     shared  shared     shared         not saved  shared
      state:gen.slot        i32(2,4)    generator  kept       copy    kept       host write     saved      written
      state:gen.token_ring  i32(6)      generator  kept       copy    kept       kept           saved      written
      state:gen.rng         u32(2)      generator  kept       copy    kept       kept           saved      written
      state:gen.seen        f32(10)     generator  kept       copy    kept       kept           saved      written
      state:gen.sampling    f32(2,8)    generator  kept       copy    kept       kept           saved      written
      state:gen.stop_ids    i32(2,8)    generator  kept       copy    kept       kept           saved      written"
    `);
    expect(() => table.add(generatorStateEntries({ slots: 2, vocab: 5, K: 2 })[0]!)).toThrow(/declared twice/);
  });

  test('evicting policies: whole-slot entries, h2o positions and scores, snapshotted whole for rollback', () => {
    const policies = withKvPolicies(spec.slice(0, 1), { kind: 'h2o', recent: 2, heavy: 2 });
    expect(new StateTable(memoryStateEntries(policies, { slots: 1, capacity: 16, maxChunk: 2 }, 1)).print()).toMatchInlineSnapshot(`
      "buffer             shape     owner   clear      fork    keep       rollback       save       restore
      state:L0.k         f32(5,4)  memory  masked     copy    masked     from snapshot  saved      written
      state:L0.v         f32(5,4)  memory  masked     copy    masked     from snapshot  saved      written
      state:L0.kpos      i32(1,5)  memory  zero       copy    zero       from snapshot  saved      written
      state:L0.score     f32(1,5)  memory  zero       copy    zero       from snapshot  saved      written
      snapshot:L0.k      f32(5,4)  memory  forgotten  copy    forgotten  kept           not saved  forgotten
      snapshot:L0.v      f32(5,4)  memory  forgotten  copy    forgotten  kept           not saved  forgotten
      snapshot:L0.kpos   i32(1,5)  memory  forgotten  copy    forgotten  kept           not saved  forgotten
      snapshot:L0.score  f32(1,5)  memory  forgotten  copy    forgotten  kept           not saved  forgotten
      state:pos          i32(1)    memory  zero       copy    zero       host write     saved      written
      snapshot:pos       i32(1)    memory  forgotten  copy    forgotten  kept           not saved  forgotten
      memory:scratch     f32(20)   memory  shared     shared  shared     shared         not saved  shared
      memory:zero        f32(1)    memory  shared     shared  shared     shared         not saved  shared"
    `);
    // a budget that covers the capacity leaves the layer dense
    expect(memoryStateEntries(policies, { slots: 1, capacity: 4, maxChunk: 2 }, 0).map((e) => e.kind)).toEqual(['kv', 'kv', 'position', 'helper', 'helper']);
  });

  test('buffer keys are produced in exactly one place', () => {
    const walk = (dir: string): string[] =>
      readdirSync(path.join(ROOT, dir)).flatMap((n) => (statSync(path.join(ROOT, dir, n)).isDirectory() ? walk(path.join(dir, n)) : n.endsWith('.ts') ? [path.join(dir, n)] : []));
    const files = ['caches', 'runtime', 'models', 'dsl', 'compiler', 'cli', 'bench'].flatMap(walk);
    // a key is a role followed by ':' inside a string or template literal
    const keyText = /[`'"][^`'"\n]*\b(state|snapshot|weight|input|output|memory):(\$\{|[A-Za-z])/;
    const makers = files.filter((f) => readFileSync(path.join(ROOT, f), 'utf8').split('\n').some((line) => !line.trim().startsWith('//') && !line.trim().startsWith('*') && keyText.test(line)));
    expect(makers).toEqual([]);
    expect(bufferKey('m0/', 'state', 'L3.k')).toBe('m0/state:L3.k');
  });
});
