// `bench stream-times <model-dir> [--tokens N] [--steps K] [--rounds R]`: when a greedy generation's text pieces
// reach the caller (the generator's submissions from an idle GPU: runtime/generator.ts rampSteps), after one
// warm-up generation. Prints one line a round: pieces, the first piece (the prefill's token, read back with the
// first decode submission), the second, the last, and the readbacks.
import { Session } from '../runtime/session.ts';

export async function streamTimesMain(argv: string[]): Promise<void> {
  const dir = argv[0];
  if (!dir || dir.startsWith('--')) throw new Error('[bench] stream-times takes a model folder');
  const flag = (name: string, fallback: number) => {
    const i = argv.indexOf(name);
    const v = i < 0 ? fallback : Number(argv[i + 1]);
    if (!Number.isInteger(v) || v < 1) throw new Error(`[bench] ${name} takes a positive integer`);
    return v;
  };
  const [tokens, K, rounds] = [flag('--tokens', 41), flag('--steps', 8), flag('--rounds', 4)];
  const session = await Session.load(dir, { slots: 1, capacity: 256, stepsPerSubmit: K });
  await session.generate('def f(x):', { maxNewTokens: 12, stopTokenIds: [] }).result();
  for (let round = 0; round < rounds; round++) {
    const t0 = performance.now();
    const g = session.generate('def fibonacci(n):', { maxNewTokens: tokens, stopTokenIds: [] });
    const at: number[] = [];
    for await (const piece of g) if (piece.length) at.push(performance.now() - t0);
    const ms = (i: number) => (at[i] === undefined ? '-' : at[i]!.toFixed(0));
    console.log(`round ${round}: ${tokens} tokens (K=${K}) in ${at.length} pieces: first ${ms(0)} ms, second ${ms(1)}, last ${ms(at.length - 1)}; ${g.stats?.readbacks ?? '?'} readbacks`);
  }
  await session.close();
}
