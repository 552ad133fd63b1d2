// Parity checks against the transformers fixtures copied into test/fixtures/hf (see runtime/parity.ts).
import * as path from 'node:path';
import { type ParityResult, runParity as runParityIn } from '../../runtime/parity.ts';

export { argmax, loadReference, maxAbsDiff, openRunner, refRow } from '../../runtime/parity.ts';
export type { ParityResult, Reference } from '../../runtime/parity.ts';

export const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/hf');

/** runParity on a fixture folder by name (e.g. 'llama'). */
export function runParity(name: string, opts: { chunks?: number[]; fuse?: boolean; window?: number } = {}): Promise<ParityResult> {
  return runParityIn(path.join(FIXTURES, name), opts);
}
