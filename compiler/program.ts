// A compiled Program: buffers, kernels and the dispatch order for one bucket. Plain data: printable and serialisable.
import type { DType, StorageDType, WeightPiece } from './ir.ts';

export type BufferRole = 'input' | 'output' | 'weight' | 'state' | 'temp';

export interface BufferSpec {
  id: number;
  role: BufferRole;
  /** Name for inputs, outputs, weights and states; temps are anonymous. */
  name?: string;
  bytes: number;
  dtype: DType;
  /** Weights only: how the values are stored (16-bit ones packed two to a u32). */
  storage?: StorageDType;
  /** Weights only: the rows of a larger checkpoint tensor this buffer holds (split to fit the binding limit). */
  piece?: WeightPiece;
  shape: number[];
}

export interface KernelSpec {
  name: string;
  wgsl: string;
  /** Buffer ids bound at @binding(0..n-1) of group 0; `writes` lists those bound read_write. */
  bindings: number[];
  writes: number[];
  workgroups: [number, number, number];
  workgroupSize: number;
  /** The template of each kernel this dispatch runs (several when independent kernels share a dispatch). */
  templates: string[];
  /** The compute ops fused into this dispatch, e.g. `matmul*3 mean rsqrt mul*6` (views and constants left out). */
  ops: string;
  /** Node ids this kernel computes (root first), for printing and profiling. */
  nodes: number[];
}

export interface Program {
  bucket: Record<string, number>;
  buffers: BufferSpec[];
  kernels: KernelSpec[];
  inputs: Record<string, number>;
  outputs: Record<string, number>;
  weights: Record<string, number>;
  states: Record<string, number>;
}

function kb(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)}MiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)}KiB` : `${bytes}B`;
}

/** Text form: the buffer plan, then one line a dispatch. */
export function printProgram(p: Program): string {
  const lines = [`program bucket=${JSON.stringify(p.bucket)} kernels=${p.kernels.length} buffers=${p.buffers.length}`];
  for (const b of p.buffers)
    lines.push(`  buf${b.id} ${b.role}${b.name ? ` '${b.name}'` : ''} ${b.storage ?? b.dtype}(${b.shape.join(',')}) ${kb(b.bytes)}`);
  for (const k of p.kernels)
    lines.push(`  ${k.name} wg=${k.workgroupSize} grid=${k.workgroups.join('x')} reads=[${k.bindings.filter((b) => !k.writes.includes(b)).map((b) => `buf${b}`).join(',')}] writes=[${k.writes.map((b) => `buf${b}`).join(',')}]`);
  return lines.join('\n');
}

/** Bytes a kernel's bindings span: what it reads (every binding it does not write) and what it writes. */
export function kernelBytes(p: Program, k: KernelSpec): { read: number; written: number } {
  const size = (b: number) => p.buffers[b]!.bytes;
  return {
    read: k.bindings.filter((b) => !k.writes.includes(b)).reduce((a, b) => a + size(b), 0),
    written: k.writes.reduce((a, b) => a + size(b), 0),
  };
}

/**
 * The schedule of a Program, one line a dispatch: index, template(s), grid x workgroup size, bytes its bindings
 * read and write (weights exactly; an upper bound for buffers it reads in part), and the ops fused into it.
 */
export function printSchedule(p: Program): string {
  const lines = [`schedule bucket=${JSON.stringify(p.bucket)} dispatches=${p.kernels.length}`];
  let read = 0;
  let written = 0;
  p.kernels.forEach((k, i) => {
    const b = kernelBytes(p, k);
    read += b.read;
    written += b.written;
    const grid = k.workgroups[1] > 1 ? `${k.workgroups[0]}x${k.workgroups[1]}` : `${k.workgroups[0]}`;
    lines.push(`  ${String(i).padStart(3)} ${k.templates.join('+').padEnd(22)} grid ${grid.padEnd(7)} wg ${String(k.workgroupSize).padEnd(3)} read ${kb(b.read).padStart(8)} write ${kb(b.written).padStart(8)}  ${k.ops}`);
  });
  // a driver compiles each distinct kernel text once (lavapipe: ~0.1-3 s each), whatever the dispatch count
  const distinct = new Set(p.kernels.map((k) => k.wgsl)).size;
  lines.push(`  total read ${kb(read)}, written ${kb(written)}; ${distinct} distinct kernels (pipelines to compile)`);
  return lines.join('\n');
}

export function serializeProgram(p: Program): string {
  return JSON.stringify(p);
}

export function deserializeProgram(text: string): Program {
  const p = JSON.parse(text) as Program;
  if (!Array.isArray(p.kernels) || !Array.isArray(p.buffers)) throw new Error('not a serialised Strata program');
  return p;
}
