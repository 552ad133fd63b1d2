// Shared pieces of the fuzz tests: how many cases (2,000 in the normal test run, FUZZ_RUNS for `npm run fuzz`),
// the seed (fixed, so a failure reproduces; fast-check prints the seed and path to replay and shrinks the input),
// and the outcome classes: success, or a typed user error with a bounded message. Anything else fails the test.
import { appendFileSync } from 'node:fs';
import { expect } from 'vitest';
import { isUserError } from '../../base/errors.ts';

export const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
export const FUZZ_SEED = Number(process.env.FUZZ_SEED ?? 20261202);
/** Hang guard only: 2,000 cases of any target take a few seconds on an idle 2-core machine. */
export const FUZZ_TIMEOUT_MS = Math.max(120_000, FUZZ_RUNS * 10);
/** Longest message a refusal may carry, whatever the input. */
export const MAX_MESSAGE_CHARS = 4000;

export class Outcomes {
  readonly counts = new Map<string, number>();
  cases = 0;

  constructor(readonly target: string) {}

  /** Runs one case and counts its outcome; throws (failing the property) on anything but success or a user error. */
  async run(work: () => unknown): Promise<void> {
    let outcome = 'success';
    try {
      await work();
    } catch (error) {
      if (!isUserError(error)) throw error;
      if (error.message.length > MAX_MESSAGE_CHARS) throw new Error(`${error.name} message of ${error.message.length} characters: ${error.message.slice(0, 200)}…`);
      outcome = `typed error: ${error.name}`;
    }
    this.cases++;
    this.counts.set(outcome, (this.counts.get(outcome) ?? 0) + 1);
  }

  /** Prints the counts (and appends them to FUZZ_REPORT, one JSON line per target) and checks both classes occurred. */
  report(): void {
    const counts = Object.fromEntries([...this.counts.entries()].sort(([a], [b]) => a.localeCompare(b)));
    console.log(`fuzz ${this.target}: ${this.cases} cases (seed ${FUZZ_SEED}): ${JSON.stringify(counts)}`);
    if (process.env.FUZZ_REPORT) appendFileSync(process.env.FUZZ_REPORT, `${JSON.stringify({ target: this.target, seed: FUZZ_SEED, cases: this.cases, counts })}\n`);
    // a generator that only ever produces refusals (or only successes) would not test much
    expect(this.counts.get('success') ?? 0).toBeGreaterThan(0);
    expect(this.cases - (this.counts.get('success') ?? 0)).toBeGreaterThan(0);
  }
}

/** fast-check settings of every fuzz test. */
export const fuzzParameters = { numRuns: FUZZ_RUNS, seed: FUZZ_SEED, verbose: 1 } as const;

/** A fresh folder for the cases' files: in memory (/dev/shm) where there is one, since each case writes a file. */
export async function fuzzScratch(prefix: string): Promise<string> {
  const { existsSync, promises } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return promises.mkdtemp(join(base, prefix));
}
