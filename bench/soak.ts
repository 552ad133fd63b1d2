// `npm run soak`: a long decode run that joins, leaves, forks and rolls back sequences and wraps sliding-window
// rings, sampling GPU buffer memory, process memory and the JS heap every --sample-every steps, so that a leak
// shows as a slope. Writes bench/results/<date>-soak-<steps>.json (or --out) with the machine and the series.
//
// Two lanes advance in lockstep, one decode step each per iteration: tiny-granite-code (the tiny model: Mamba-2
// and full attention, so no ring) for join/leave/fork/rollback, and the gemma3n_text fixture (random weights,
// sliding window 8) whose ring buffers wrap every few steps. Not part of the test run: 100,000 steps take hours
// on a software adapter.
//
//   npm run soak -- [--steps 100000] [--sample-every 1000] [--seed 1] [--churn 1] [--out file.json]
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../base/random.ts';
import { isRing, kvEntries, ownKv } from '../caches/spec.ts';
import { loadConfig } from '../models/config.ts';
import { buildModel } from '../models/registry.ts';
import { getSharedDevice } from '../runtime/device.ts';
import { GpuRuntime } from '../runtime/gpuRuntime.ts';
import { ModelRunner } from '../runtime/modelRunner.ts';
import { argmax } from '../runtime/parity.ts';
import { openSafetensors } from '../base/safetensors.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface SoakOptions {
  steps: number;
  sampleEvery: number;
  seed: number;
  /** Multiplies the probability of every sequence event (short verification runs use 10 to see each one). */
  churn: number;
  out?: string;
}

function parseArgs(argv: string[]): SoakOptions {
  const options: SoakOptions = { steps: 100_000, sampleEvery: 1000, seed: 1, churn: 1 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    const count = (): number => {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer, got ${value}`);
      return n;
    };
    if (flag === '--steps') options.steps = count();
    else if (flag === '--sample-every') options.sampleEvery = count();
    else if (flag === '--seed') options.seed = count();
    else if (flag === '--churn') options.churn = count();
    else if (flag === '--out' && value) options.out = value;
    else throw new Error(`unknown option ${flag} (expected --steps, --sample-every, --seed, --churn, --out)`);
  }
  return options;
}

/** Live WebGPU buffers of the device, counted by wrapping createBuffer and destroy. */
function trackBuffers(device: GPUDevice): { liveBytes: number; liveBuffers: number } {
  const live = { liveBytes: 0, liveBuffers: 0 };
  const create = device.createBuffer.bind(device);
  device.createBuffer = (descriptor: GPUBufferDescriptor): GPUBuffer => {
    const buffer = create(descriptor);
    const size = buffer.size;
    live.liveBytes += size;
    live.liveBuffers++;
    const destroy = buffer.destroy.bind(buffer);
    let destroyed = false;
    buffer.destroy = () => {
      if (!destroyed) {
        destroyed = true;
        live.liveBytes -= size;
        live.liveBuffers--;
      }
      destroy();
    };
    return buffer;
  };
  return live;
}

interface Lane {
  name: string;
  runner: ModelRunner;
  /** Next token per slot (the argmax of its last logits), undefined for an empty slot. */
  next: (number | undefined)[];
  events: Record<'join' | 'leave' | 'fork' | 'snapshot' | 'rollback' | 'full' | 'ringWraps', number>;
  steps: number;
  /** Entries of the smallest sliding-window ring, undefined without one. */
  ringEntries: number | undefined;
}

async function openLane(name: string, dir: string, runtime: GpuRuntime, options: { slots: number; capacity: number; window?: number }): Promise<Lane> {
  const config = await loadConfig(dir);
  const runner = new ModelRunner(runtime, buildModel(config), await openSafetensors(dir), { ...options, chunks: [4], config });
  const rings = runner.model.memory().map(ownKv).filter((kv) => kv !== undefined && isRing(kv, runner.memory)).map((kv) => kvEntries(kv!, runner.memory));
  const ringEntries = rings.length > 0 ? Math.min(...rings) : undefined;
  return { name, runner, next: Array(options.slots).fill(undefined), events: { join: 0, leave: 0, fork: 0, snapshot: 0, rollback: 0, full: 0, ringWraps: 0 }, steps: 0, ringEntries };
}

/** One iteration of a lane: maybe some sequence events, then one decode step over every active slot. */
async function advance(lane: Lane, random01: () => number, churn: number): Promise<void> {
  const rand = random01;
  const chance = (p: number) => random01() < p * churn;
  const { runner } = lane;
  const memory = runner.caches;
  const slots = runner.options.slots;
  const capacity = runner.options.capacity;
  const active = () => [...Array(slots).keys()].filter((s) => lane.next[s] !== undefined);
  const free = () => [...Array(slots).keys()].filter((s) => lane.next[s] === undefined);
  const pick = <T>(list: T[]): T => list[Math.floor(rand() * list.length)]!;
  const token = () => 1 + Math.floor(rand() * (runner.model.vocabSize - 1));

  const leave = (slot: number) => {
    memory.clear(slot);
    lane.next[slot] = undefined;
  };
  if (active().length > 0 && chance(0.01)) {
    leave(pick(active()));
    lane.events.leave++;
  }
  if (free().length > 0 && (active().length === 0 || chance(0.02))) {
    const slot = pick(free());
    const prompt = Array.from({ length: 1 + Math.floor(rand() * 6) }, token);
    lane.next[slot] = argmax(await runner.prefill(slot, prompt));
    lane.events.join++;
  }
  if (active().length > 0 && free().length > 0 && chance(0.01)) {
    const [from, to] = [pick(active()), pick(free())];
    memory.fork(from, to);
    lane.next[to] = lane.next[from];
    lane.events.fork++;
  }
  if (active().length > 0 && chance(0.02)) {
    memory.snapshot(pick(active()));
    lane.events.snapshot++;
  }
  if (active().length > 0 && chance(0.01)) {
    const slot = pick(active());
    const positions = memory.restorablePositions(slot).filter((p) => p > 0 && p < memory.lengths[slot]!);
    if (positions.length > 0) {
      memory.rollback(slot, pick(positions));
      lane.next[slot] = token(); // the logits at that position are not kept
      lane.events.rollback++;
    }
  }
  for (const slot of active()) {
    if (memory.lengths[slot]! >= capacity - 1) {
      leave(slot);
      lane.events.full++;
    }
  }
  const rows = active().map((slot) => ({ slot, tokens: [lane.next[slot]!] }));
  if (rows.length === 0) return;
  const ring = lane.ringEntries;
  const logits = await runner.step(rows, 'last', { rows: slots, tokens: 1 });
  rows.forEach((row, i) => {
    lane.next[row.slot] = argmax(logits[i]!);
    if (ring !== undefined && memory.lengths[row.slot]! % ring === 0) lane.events.ringWraps++;
  });
  lane.steps++;
}

function machine(adapter: Record<string, unknown>) {
  const cpus = os.cpus();
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    // not a git checkout
  }
  return { hostname: os.hostname(), platform: `${os.platform()} ${os.release()}`, cpu: cpus[0]?.model ?? 'unknown', cores: cpus.length, memoryBytes: os.totalmem(), node: process.version, adapter, commit };
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const strataDevice = await getSharedDevice();
  const gpu = trackBuffers(strataDevice.device);
  const runtime = new GpuRuntime(strataDevice);
  const lanes = [
    await openLane('tiny-granite-code', path.join(ROOT, 'assets/models/tiny-granite-code'), runtime, { slots: 4, capacity: 64 }),
    await openLane('gemma3n_text fixture (sliding window 8)', path.join(ROOT, 'test/fixtures/hf/gemma3n_text'), runtime, { slots: 2, capacity: 64 }),
  ];
  const rand = mulberry32(options.seed);
  const started = performance.now();
  const samples: Record<string, number>[] = [];
  const sample = (step: number) => {
    global.gc?.();
    const usage = process.memoryUsage();
    samples.push({
      step,
      seconds: Math.round((performance.now() - started) / 100) / 10,
      gpuLiveBytes: gpu.liveBytes,
      gpuLiveBuffers: gpu.liveBuffers,
      ...runtime.counters,
      rssBytes: usage.rss,
      heapUsedBytes: usage.heapUsed,
      externalBytes: usage.external,
      arrayBuffersBytes: usage.arrayBuffers,
    });
    const last = samples[samples.length - 1]!;
    process.stderr.write(`soak: step ${step}/${options.steps} [${last.seconds}s] gpu ${last.gpuLiveBytes} B in ${last.gpuLiveBuffers} buffers, heap ${last.heapUsedBytes} B, rss ${last.rssBytes} B\n`);
  };
  // the first steps compile the programs and fill the caches: the baseline is taken once they ran
  for (let step = 0; step < options.steps; step++) {
    if (step % options.sampleEvery === 0) sample(step);
    for (const lane of lanes) await advance(lane, rand, options.churn);
  }
  sample(options.steps);
  const first = samples[1] ?? samples[0]!;
  const last = samples[samples.length - 1]!;
  const result = {
    kind: 'strata-soak/1',
    date: new Date().toISOString(),
    machine: machine({ ...strataDevice.adapterInfo, isFallback: strataDevice.isFallback ?? false }),
    options,
    lanes: lanes.map((lane) => ({ model: lane.name, slots: lane.runner.options.slots, capacity: lane.runner.options.capacity, ringEntries: lane.ringEntries ?? null, decodeSteps: lane.steps, events: lane.events })),
    growth: {
      fromStep: first.step,
      gpuLiveBytes: last.gpuLiveBytes! - first.gpuLiveBytes!,
      heapUsedBytes: last.heapUsedBytes! - first.heapUsedBytes!,
      rssBytes: last.rssBytes! - first.rssBytes!,
      pipelines: last.pipelines! - first.pipelines!,
      bindGroups: last.bindGroups! - first.bindGroups!,
    },
    samples,
  };
  const out = options.out ?? path.join(ROOT, 'bench/results', `${result.date.slice(0, 10)}-soak-${options.steps}-steps.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stderr.write(`soak: ${options.steps} iterations in ${last.seconds}s; growth after step ${first.step}: ${JSON.stringify(result.growth)}; wrote ${out}\n`);
  process.exit(0); // Dawn can keep the event loop alive
}

await main();
