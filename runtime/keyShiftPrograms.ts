// Re-rotating cached keys after entries move to lower positions (removing a range from the middle of a
// sequence): a further rotation by -n (rotations compose). One small traced program per layer, on the device;
// the memory (caches/) receives it through the KeyShifter interface.
import { compile } from '../compiler/compile.ts';
import { rope } from '../dsl/nn/basic.ts';
import { Tensor } from '../dsl/tensor.ts';
import { input, iota, state, trace, weight } from '../dsl/trace.ts';
import type { KeyShift, KeyShifter, RopeKeys } from '../caches/keyShift.ts';
import type { KvLayer } from '../caches/kvCache.ts';
import type { MemoryOptions } from '../caches/spec.ts';
import { kvStateName } from '../caches/stateTable.ts';
import type { Executable, GpuRuntime } from './gpuRuntime.ts';

export class KeyShiftPrograms implements KeyShifter {
  private readonly programs = new Map<number, Executable>();

  constructor(
    readonly runtime: GpuRuntime,
    /** The session's buffer namespace: the program updates the session's own K buffers. */
    readonly namespace: string,
    readonly options: MemoryOptions,
    readonly shift: KeyShift,
  ) {}

  /** Compiles the programs `encode` will need, so that a failure happens before anything moves. */
  async prepare(layers: readonly KvLayer[]): Promise<void> {
    if (this.shift.kind === 'none') return;
    for (const l of layers) {
      const rope = this.shift.layer(l.layer);
      if (rope) await this.program(l, rope);
    }
  }

  /** Rotates the keys in entries [from, to) of a slot by `delta` positions in every rotary layer. */
  async encode(layers: readonly KvLayer[], slot: number, from: number, to: number, delta: number): Promise<void> {
    if (this.shift.kind === 'none' || from >= to || delta === 0) return;
    for (const l of layers) {
      const rope = this.shift.layer(l.layer);
      if (!rope) continue;
      const exe = await this.program(l, rope);
      exe.writeInput('shift_args', Int32Array.of(slot, from, to, delta));
      exe.run();
    }
  }

  private async program(l: KvLayer, keys: RopeKeys): Promise<Executable> {
    const have = this.programs.get(l.layer);
    if (have) return have;
    const { kvHeads: KVH, headDim: D } = l.spec;
    const E = l.entries;
    const R = this.options.slots * E;
    const invFreqName = `keyshift.L${l.layer}.inv_freq`;
    const graph = trace(() => {
      const cache = state(kvStateName(l.layer, 'k'), [R, KVH * D]);
      const args = input('shift_args', [4], 'i32'); // slot, from, to, delta
      const arg = (i: number) => args.slice(0, i, i + 1); // [1]
      const [slot, from, to, delta] = [arg(0), arg(1), arg(2), arg(3)];
      const entry = iota([E], 0, 'i32');
      const rows = slot.mul(E).add(entry); // [E]
      const keysNow = cache.gather(rows).reshape(1, E, KVH, D);
      const positions = delta.reshape(1, 1).broadcastTo([1, E]);
      const invFreq = weight(invFreqName, [keys.rotaryDim / 2]);
      const moved = entry.ge(from).and(entry.lt(to));
      cache.scatter(Tensor.where(moved, rows, R), rope(keysNow, positions, invFreq, keys.rotaryDim).reshape(E, KVH * D));
    });
    const program = compile(graph, { limits: this.runtime.limits });
    const exe = await this.runtime.load(program, { namespace: this.namespace });
    this.runtime.write(exe.buffer('weight', invFreqName)!, keys.invFreq);
    this.programs.set(l.layer, exe);
    return exe;
  }
}
