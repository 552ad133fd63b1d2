// groupKernels: kernels next to each other in dispatch order that do not touch each other's buffers and share a
// workgroup size become one dispatch (horizontal fusion): each keeps its own workgroups, told apart by the
// workgroup index, so q/k/v projections or two KV scatters cost one dispatch and one barrier instead of three. A
// one-workgroup map or scatter joins kernels of a larger size with its spare threads idle (groupWorkgroupSize).
// Decode on a fast GPU is bound by dispatches, not bytes (README, benchmarks).
import type { DeviceLimits } from '../compile.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

/** Most kernels one dispatch holds: past a few, a group saves little and its shader grows. */
const MAX_GROUP = 6;

/** Bytes of the workgroup variables a list of declarations holds, largest per name (parts of a group share names). */
export function workgroupVars(decls: readonly string[]): Map<string, { decl: string; bytes: number }> {
  const vars = new Map<string, { decl: string; bytes: number }>();
  for (const d of decls) {
    const m = /^var<workgroup> (\w+): (.+);$/.exec(d);
    if (!m) continue;
    const arr = /^array<(vec4<\w+>|\w+), (\d+)>$/.exec(m[2]!);
    const bytes = arr ? (arr[1]!.startsWith('vec4') ? 16 : arr[1] === 'f16' ? 2 : 4) * Number(arr[2]) : 4;
    const have = vars.get(m[1]!);
    if (!have || have.bytes < bytes) vars.set(m[1]!, { decl: d, bytes });
  }
  return vars;
}

/**
 * The workgroup size a group of kernels runs with: the parts' common size, or the largest where every smaller part
 * runs correctly in a larger workgroup (one workgroup of a map or scatter, its spare threads idle: the position
 * update beside the LM head's matvec). Undefined when the parts cannot share one.
 */
export function groupWorkgroupSize(parts: readonly LoweredKernel[], mixed = true): number | undefined {
  const size = Math.max(...parts.map((k) => k.workgroupSize));
  const fits = (k: LoweredKernel) => k.workgroupSize === size || (mixed && k.anyLargerWorkgroup === true);
  return parts.every(fits) ? size : undefined;
}

export function groupKernels(kernels: LoweredKernel[], bufferOf: Map<number, number>, limits: DeviceLimits): LoweredKernel[][] {
  const writes = (k: LoweredKernel) => [k.write, ...(k.alsoWrites ?? [])].map((w) => bufferOf.get(w.id)!);
  const reads = (k: LoweredKernel) => k.reads.map((r) => bufferOf.get(r.id)!);
  const groups: LoweredKernel[][] = [];
  let current: LoweredKernel[] = [];
  let written = new Set<number>();
  let touched = new Set<number>();
  const fits = (k: LoweredKernel): boolean => {
    if (current.length === 0) return true;
    if (current.length >= MAX_GROUP || groupWorkgroupSize([...current, k], limits.oneGroupFusion ?? true) === undefined) return false;
    if (writes(k).some((b) => touched.has(b)) || reads(k).some((b) => written.has(b))) return false;
    const buffers = new Set([...touched, ...writes(k), ...reads(k)]);
    if (buffers.size > limits.maxStorageBuffersPerShaderStage) return false;
    const vars = workgroupVars([...current, k].flatMap((c) => c.text.decls));
    const bytes = [...vars.values()].reduce((a, v) => a + v.bytes, 0);
    if (bytes > (limits.maxComputeWorkgroupStorageSize ?? 16384)) return false;
    const total = [...current, k].reduce((a, c) => a + c.groups, 0);
    return total <= limits.maxComputeWorkgroupsPerDimension ** 2;
  };
  for (const k of kernels) {
    if (!fits(k)) {
      groups.push(current);
      current = [];
      written = new Set();
      touched = new Set();
    }
    current.push(k);
    for (const b of writes(k)) written.add(b);
    for (const b of [...writes(k), ...reads(k)]) touched.add(b);
  }
  if (current.length) groups.push(current);
  return groups;
}
