// `bench stream-times` on this machine's adapter: a generation's pieces as the caller gets them, with the readbacks
// of the generator's submissions from an idle GPU (1, 2, 4, then K steps: runtime/generator.ts submissionSteps).
import { afterEach, expect, test, vi } from 'vitest';
import { streamTimesMain } from '../../bench/streamTimes.ts';
import { submissionSteps } from '../../runtime/generator.ts';

afterEach(() => vi.restoreAllMocks());

test('prints a line a round: pieces, their times in order, and one readback a submission', { timeout: 600_000 }, async () => {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line));
  await streamTimesMain(['assets/models/tiny-granite-code', '--tokens', '17', '--rounds', '2']);
  expect(lines).toHaveLength(2);
  for (const line of lines) {
    const m = /^round \d: 17 tokens \(K=8\) in (\d+) pieces: first (\d+) ms, second (\d+), last (\d+); (\d+) readbacks$/.exec(line);
    expect(m, line).not.toBeNull();
    const [pieces, first, second, last, readbacks] = m!.slice(1).map(Number) as [number, number, number, number, number];
    // the first token comes from the prefill (read back with the first submission), the 16 decode steps in
    // submissions of 1, 2, 4, 8 and 1
    expect(readbacks).toBe(submissionSteps(8, 16).length);
    expect(pieces).toBeGreaterThanOrEqual(2);
    expect(pieces).toBeLessThanOrEqual(readbacks + 1);
    expect(first).toBeLessThanOrEqual(second);
    expect(second).toBeLessThanOrEqual(last);
  }
});

test('a missing model folder is refused before any GPU work', async () => {
  await expect(streamTimesMain([])).rejects.toThrow('[bench] stream-times takes a model folder');
  await expect(streamTimesMain(['assets/models/tiny-granite-code', '--tokens', '0'])).rejects.toThrow('--tokens takes a positive integer');
});
