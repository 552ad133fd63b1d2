// Per-kernel profile of one compiled program: each kernel's time, template, grid and bound bytes, its achieved
// fraction of the copy roofline, and the same grouped by kernel template. Plain data, then a text table.
import type { KernelSpec, Program } from '../compiler/program.ts';
import type { TimestampQuantization } from './timing.ts';

export interface KernelRow {
  /** Dispatch order in the program. */
  index: number;
  name: string;
  template: string;
  ms: number;
  workgroups: [number, number, number];
  workgroupSize: number;
  /** Sum of the sizes of the buffers the kernel binds: an upper bound of the bytes it touches. */
  bytes: number;
  readBytes: number;
  writeBytes: number;
  /** bytes / ms over the copy roofline (read + written per second) measured in the same run. */
  fractionOfRoofline: number;
}

export interface TemplateRow {
  template: string;
  kernels: number;
  ms: number;
  bytes: number;
  fractionOfRoofline: number;
  shareOfTime: number;
}

export interface KernelProfile {
  /** 'timestamp': timestamp queries, one pass per kernel; 'wallclock-alone': each kernel repeated alone. */
  timer: 'timestamp' | 'wallclock-alone';
  /** Per-kernel time is the median over this many profiled runs. */
  repeats: number;
  totalMs: number;
  totalBytes: number;
  copyGBps: number;
  /** Timestamps only: whether they looked rounded (then the figures say little about short kernels). */
  quantization?: TimestampQuantization;
  templates: TemplateRow[];
  /** Every kernel, in dispatch order. */
  kernels: KernelRow[];
}

/** The template (kernel mode) of a kernel: the second `_`-separated part of its name (`k16_element_matmul` -> element). */
export function kernelTemplate(name: string): string {
  return name.split('_')[1] ?? name;
}

/** Bound bytes of a kernel, read-only bindings and read_write ones apart. */
export function kernelBytes(program: Program, kernel: KernelSpec): { bytes: number; readBytes: number; writeBytes: number } {
  const size = (id: number) => program.buffers[id]!.bytes; // buffers are listed by id
  let readBytes = 0;
  let writeBytes = 0;
  for (const id of kernel.bindings) {
    if (kernel.writes.includes(id)) writeBytes += size(id);
    else readBytes += size(id);
  }
  return { bytes: readBytes + writeBytes, readBytes, writeBytes };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length === 0 ? 0 : sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function buildKernelProfile(
  program: Program,
  msPerKernel: number[],
  options: { timer: KernelProfile['timer']; repeats: number; copyBytesPerSecond: number; quantization?: TimestampQuantization },
): KernelProfile {
  const fraction = (bytes: number, ms: number) => (ms > 0 ? bytes / (ms / 1e3) / options.copyBytesPerSecond : 0);
  const kernels: KernelRow[] = program.kernels.map((k, index) => {
    const ms = msPerKernel[index] ?? 0;
    const bytes = kernelBytes(program, k);
    return { index, name: k.name, template: kernelTemplate(k.name), ms, workgroups: k.workgroups, workgroupSize: k.workgroupSize, ...bytes, fractionOfRoofline: fraction(bytes.bytes, ms) };
  });
  const totalMs = kernels.reduce((a, k) => a + k.ms, 0);
  const groups = new Map<string, TemplateRow>();
  for (const k of kernels) {
    const g = groups.get(k.template) ?? { template: k.template, kernels: 0, ms: 0, bytes: 0, fractionOfRoofline: 0, shareOfTime: 0 };
    groups.set(k.template, { ...g, kernels: g.kernels + 1, ms: g.ms + k.ms, bytes: g.bytes + k.bytes });
  }
  const templates = [...groups.values()]
    .map((g) => ({ ...g, fractionOfRoofline: fraction(g.bytes, g.ms), shareOfTime: totalMs > 0 ? g.ms / totalMs : 0 }))
    .sort((a, b) => b.ms - a.ms);
  return {
    timer: options.timer,
    repeats: options.repeats,
    totalMs,
    totalBytes: kernels.reduce((a, k) => a + k.bytes, 0),
    copyGBps: options.copyBytesPerSecond / 1e9,
    ...(options.quantization ? { quantization: options.quantization } : {}),
    templates,
    kernels,
  };
}

function size(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)}M` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)}K` : `${bytes}B`;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** The per-template table, then the `top` slowest kernels (all when omitted). */
export function formatKernelProfile(p: KernelProfile, top?: number): string {
  const timer = p.timer === 'timestamp' ? `timestamp queries, median of ${p.repeats}` : `each kernel alone by wall clock, ${p.repeats} dispatches`;
  const lines = [
    `${p.kernels.length} kernels, ${p.totalMs.toFixed(3)} ms summed (${timer}), ${size(p.totalBytes)} bound, copy roofline ${p.copyGBps.toFixed(p.copyGBps < 10 ? 1 : 0)} GB/s`,
    ...(p.quantization ? [p.quantization.note] : p.timer === 'wallclock-alone' ? ['each kernel timed alone: times include its share of submission overhead'] : []),
    `${'template'.padEnd(14)}${'kernels'.padStart(8)}${'ms'.padStart(10)}${'share'.padStart(8)}${'bytes'.padStart(9)}${'roofline'.padStart(10)}`,
    ...p.templates.map((t) => `${t.template.padEnd(14)}${String(t.kernels).padStart(8)}${t.ms.toFixed(3).padStart(10)}${pct(t.shareOfTime).padStart(8)}${size(t.bytes).padStart(9)}${pct(t.fractionOfRoofline).padStart(10)}`),
    '',
    `${'ms'.padStart(9)}  ${'kernel'.padEnd(36)}${'template'.padEnd(12)}${'grid'.padEnd(16)}${'wg'.padStart(5)}${'read'.padStart(9)}${'written'.padStart(9)}${'roofline'.padStart(10)}`,
  ];
  const rows = [...p.kernels].sort((a, b) => b.ms - a.ms).slice(0, top ?? p.kernels.length);
  for (const k of rows)
    lines.push(`${k.ms.toFixed(4).padStart(9)}  ${k.name.padEnd(36)}${k.template.padEnd(12)}${k.workgroups.join('x').padEnd(16)}${String(k.workgroupSize).padStart(5)}${size(k.readBytes).padStart(9)}${size(k.writeBytes).padStart(9)}${pct(k.fractionOfRoofline).padStart(10)}`);
  return lines.join('\n');
}
