// Shared pieces of the memory tests: fixture runners on the worker's shared GPU runtime, deterministic
// prompts, greedy continuation that keeps every step's logits.
import * as path from 'node:path';
import { loadConfig } from '../../models/config.ts';
import { MODELS, buildModel } from '../../models/registry.ts';
import { ModelRunner, type RunnerOptions } from '../../runtime/modelRunner.ts';
import { argmax } from '../../runtime/parity.ts';
import { openSafetensors } from '../../base/safetensors.ts';
import { getRuntime } from '../helpers/gpu.ts';

export const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/hf');

/** Whether a family has a forward pass yet (colleagues add them as they land). */
export function registered(modelType: string): boolean {
  return modelType in MODELS;
}

/** The first registered family of a preference list (hybrids first), or undefined. */
export function firstRegistered(...modelTypes: string[]): string | undefined {
  return modelTypes.find(registered);
}

export async function openFixture(name: string, options: Partial<RunnerOptions> = {}): Promise<ModelRunner> {
  const dir = path.join(FIXTURES, name);
  const config = await loadConfig(dir);
  const runtime = await getRuntime();
  return new ModelRunner(runtime, buildModel(config), await openSafetensors(dir), { slots: 2, capacity: 64, chunks: [1, 4], config, ...options });
}

/** Deterministic token ids in [1, 250). */
export function prompt(length: number, seed: number): number[] {
  let x = seed * 2654435761 + 12345;
  return Array.from({ length }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return 1 + (x % 249);
  });
}

export interface Continuation {
  /** Tokens fed, in order (each the argmax of the logits before it). */
  tokens: number[];
  /** Logits after each fed token. */
  logits: Float32Array[];
}

/** Feeds `steps` greedy tokens into a slot, one decode step each, starting from the logits `last`. */
export async function greedy(runner: ModelRunner, slot: number, last: Float32Array, steps: number): Promise<Continuation> {
  const out: Continuation = { tokens: [], logits: [] };
  for (let i = 0; i < steps; i++) {
    const token = argmax(last);
    [last] = (await runner.step([{ slot, tokens: [token] }], 'last', { rows: 1, tokens: 1 })) as [Float32Array];
    out.tokens.push(token);
    out.logits.push(last);
  }
  return out;
}

export function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
