// Fuzzes the tokenizer loader: a small real tokenizer.json (tiny-granite-code's, vocabulary cut to 300 ids) and a
// tokenizer_config.json, with parts replaced by any JSON or deleted and chat templates garbled, loaded from files,
// then used to encode, decode and render a chat. Every case must work or be refused with a TokenizerError.
import fc from 'fast-check';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, test } from 'vitest';
import { Tokenizer } from '../../runtime/tokenizer.ts';
import { FUZZ_TIMEOUT_MS, Outcomes, fuzzParameters, fuzzScratch } from './harness.ts';

const TINY = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');
const KEEP = 300;

let scratch: string;
beforeAll(async () => {
  scratch = await fuzzScratch('strata-fuzz-tok-');
});
afterAll(async () => {
  await fsp.rm(scratch, { recursive: true, force: true });
});

/** tiny-granite-code's tokenizer.json with only the ids below KEEP (and the merges among them). */
function smallTokenizer(): Record<string, unknown> {
  const full = JSON.parse(readFileSync(path.join(TINY, 'tokenizer.json'), 'utf8'));
  const vocab = Object.fromEntries(Object.entries(full.model.vocab as Record<string, number>).filter(([, id]) => id < KEEP));
  const merges = (full.model.merges as (string | string[])[]).filter((merge) => {
    const [a, b] = typeof merge === 'string' ? merge.split(' ') : merge;
    return a! in vocab && b! in vocab && `${a}${b}` in vocab;
  });
  return { ...full, model: { ...full.model, vocab, merges }, added_tokens: (full.added_tokens as { id: number }[]).filter((t) => t.id < KEEP) };
}

const base = smallTokenizer();
const baseConfig = JSON.parse(readFileSync(path.join(TINY, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;

const paths = [
  ['model', 'type'], ['model', 'vocab'], ['model', 'merges'], ['model', 'unk_token'], ['model', 'byte_fallback'], ['model', 'dropout'],
  ['pre_tokenizer'], ['pre_tokenizer', 'type'], ['decoder'], ['decoder', 'type'], ['normalizer'], ['post_processor'],
  ['added_tokens'], ['added_tokens', '0'], ['added_tokens', '0', 'id'], ['added_tokens', '0', 'content'], ['model', 'vocab', 'a'], ['version'],
];
const templates = fc.constantFrom(
  '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}',
  '{{ bos_token }}{{ messages[0].content }}',
  '{% if %}',
  '{{ messages[5].content.upper() }}',
  '{{ raise_exception("no") }}',
  '{% for x in range(3) %}{{ x }}{% endfor %}',
);
const anyJson = fc.jsonValue({ maxDepth: 3 });

const tokenizerEdit = fc.oneof(
  { weight: 3, arbitrary: fc.record({ path: fc.constantFrom(...paths), value: fc.oneof(anyJson, fc.constantFrom('BPE', 'WordPiece', 'Unigram', 'WordLevel', 'ByteLevel', 'Metaspace', null)) }) },
  { weight: 1, arbitrary: fc.record({ path: fc.constantFrom(...paths), value: fc.constant(undefined) }) },
);
const configEdit = fc.record({
  key: fc.constantFrom('bos_token', 'eos_token', 'pad_token', 'chat_template', 'unk_token', 'model_max_length'),
  value: fc.oneof(anyJson, templates, fc.record({ content: fc.string({ maxLength: 8 }) }), fc.array(fc.record({ name: fc.constantFrom('default', 'tool_use'), template: templates }), { maxLength: 2 })),
});
const input = fc.record({
  tokenizer: fc.oneof({ weight: 8, arbitrary: fc.array(tokenizerEdit, { maxLength: 2 }) }, { weight: 1, arbitrary: anyJson.map((whole) => ({ whole })) }),
  config: fc.array(configEdit, { maxLength: 2 }),
  text: fc.oneof(fc.constantFrom('hello world\n', '', 'def f(x):\n  return x'), fc.string({ maxLength: 12 })),
});

function edited(json: Record<string, unknown>, edits: { path: string[]; value: unknown }[]): Record<string, unknown> {
  const copy = structuredClone(json);
  for (const { path: keys, value } of edits) {
    let node = copy as Record<string, unknown>;
    for (const key of keys.slice(0, -1)) {
      if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    if (value === undefined) delete node[keys[keys.length - 1]!];
    else node[keys[keys.length - 1]!] = value;
  }
  return copy;
}

test('tokenizer files: every case loads and works, or is refused with a TokenizerError', { timeout: FUZZ_TIMEOUT_MS }, async () => {
  const outcomes = new Outcomes('tokenizer');
  await fc.assert(
    fc.asyncProperty(input, async (testCase) => {
      const tokenizerJson = 'whole' in testCase.tokenizer ? testCase.tokenizer.whole : edited(base, testCase.tokenizer);
      const config = { ...baseConfig };
      for (const { key, value } of testCase.config) config[key] = value;
      await fsp.writeFile(path.join(scratch, 'tokenizer.json'), JSON.stringify(tokenizerJson) ?? '');
      await fsp.writeFile(path.join(scratch, 'tokenizer_config.json'), JSON.stringify(config));
      await outcomes.run(async () => {
        const tokenizer = await Tokenizer.load(scratch);
        const ids = tokenizer.encode(testCase.text);
        tokenizer.decode(ids);
        const stream = tokenizer.createStreamDecoder();
        for (const id of ids) stream.push(id);
        stream.flush();
        if (tokenizer.hasChatTemplate) tokenizer.applyChatTemplate([{ role: 'user', content: testCase.text }]);
      });
    }),
    fuzzParameters,
  );
  outcomes.report();
});
