// Fuzzes config parsing for every family: each family's fixture config.json with fields replaced by any JSON, by
// awkward numbers (huge, negative, fractional) or deleted, and config.json text cut or garbled. Every case must
// parse and pass checkRunnable, or be refused with a ConfigError.
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'vitest';
import { checkRunnable, parseConfig, parseConfigJson, supportedModelTypes } from '../../models/config.ts';
import { CONFIG_LIMITS } from '../../models/configs/limits.ts';
import { FUZZ_TIMEOUT_MS, Outcomes, fuzzParameters } from './harness.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/hf');

const awkwardNumber = fc.oneof(
  fc.constantFrom(0, -1, 1, 2, 3, 0.5, 1e-9, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, 1e9, 1e300, -1e300),
  fc.integer({ min: -4, max: 300 }),
  fc.double({ noNaN: true }),
);
const value = fc.oneof(
  { weight: 3, arbitrary: awkwardNumber },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.array(fc.oneof(awkwardNumber, fc.constantFrom('attention', 'full_attention', 'mamba', 'linear_attention', 'sliding_attention')), { maxLength: 8 }) },
  { weight: 1, arbitrary: fc.constantFrom({ __float__: 'Infinity' }, { __float__: 'NaN' }, { rope_type: 'yarn', factor: 4 }, { rope_type: 'default', rope_theta: -1 }, null) },
);

type Edit = { kind: 'set'; key: string; value: unknown } | { kind: 'delete'; key: string };

describe.each(supportedModelTypes)('%s config.json', (family) => {
  const text = readFileSync(path.join(FIXTURES, family, 'config.json'), 'utf8');
  const fixture = parseConfigJson(text);
  const keys = [...new Set([...Object.keys(fixture), ...Object.keys(CONFIG_LIMITS), 'rope_parameters', 'rope_scaling', 'layer_types'])];
  const key = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...keys) }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) });
  const edit: fc.Arbitrary<Edit> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), key, value }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), key }) },
  );
  const input = fc.oneof(
    { weight: 6, arbitrary: fc.array(edit, { minLength: 1, maxLength: 3 }).map((edits) => ({ kind: 'object' as const, edits })) },
    { weight: 1, arbitrary: fc.tuple(fc.nat(text.length), fc.string({ maxLength: 8 })).map(([at, insert]) => ({ kind: 'text' as const, text: text.slice(0, at) + insert + text.slice(at + (insert.length ? 1 : 0)) })) },
  );

  test(`parses or is refused with a ConfigError`, { timeout: FUZZ_TIMEOUT_MS }, async () => {
    const outcomes = new Outcomes(`config ${family}`);
    await fc.assert(
      fc.asyncProperty(input, async (testCase) => {
        await outcomes.run(() => {
          let json: Record<string, unknown>;
          if (testCase.kind === 'text') json = parseConfigJson(testCase.text);
          else {
            json = structuredClone(fixture);
            for (const change of testCase.edits) {
              if (change.kind === 'set') json[change.key] = change.value;
              else delete json[change.key];
            }
          }
          checkRunnable(parseConfig(json));
        });
      }),
      fuzzParameters,
    );
    outcomes.report();
  });
});
