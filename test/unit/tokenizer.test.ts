import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer, TokenizerError } from '../../runtime/tokenizer.ts';

const modelDir = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

interface Reference {
  greedy: { prompt: string; prompt_ids: number[]; output_ids: number[]; text: string }[];
}

async function reference(): Promise<Reference> {
  return JSON.parse(await fsp.readFile(path.join(modelDir, 'reference.json'), 'utf8')) as Reference;
}

describe('tiny-granite-code tokenizer', () => {
  it('encodes the README example as the Python library does', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    expect(tokenizer.encode('def fibonacci(n):\n')).toEqual([319, 289, 1484, 268, 570, 512, 8, 78, 302, 199]);
  });

  it('matches every reference prompt and decodes every reference output to its text', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    const { greedy } = await reference();
    expect(greedy.length).toBeGreaterThan(0);
    for (const run of greedy) {
      expect(tokenizer.encode(run.prompt)).toEqual(run.prompt_ids);
      expect(tokenizer.decode(run.output_ids)).toBe(run.text);
      expect(tokenizer.decode(Int32Array.from(run.output_ids))).toBe(run.text);
    }
  });

  it('knows its special tokens', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    expect(tokenizer.bosTokenId).toBe(0);
    expect(tokenizer.eosTokenId).toBe(0);
    expect(tokenizer.eosTokenIds).toEqual([0]);
    expect(tokenizer.eosToken).toBe('<|endoftext|>');
    expect(tokenizer.vocabSize).toBe(2048);
    expect(tokenizer.isSpecial(0)).toBe(true);
    expect(tokenizer.decode([319, 0])).toBe('def<|endoftext|>');
    expect(tokenizer.decode([319, 0], { skipSpecialTokens: true })).toBe('def');
  });

  it('streams reference outputs into the same text', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    for (const run of (await reference()).greedy) {
      const stream = tokenizer.createStreamDecoder();
      const pieces = run.output_ids.map((id) => stream.push(id));
      pieces.push(stream.flush());
      expect(pieces.join('')).toBe(run.text);
    }
  });

  it('never emits half a multi-byte character', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    const text = 'naïve café — 世界 🙂🚀 done\n';
    const ids = tokenizer.encode(text);
    expect(tokenizer.decode(ids)).toBe(text);
    // The point of the test: some ids of this small vocabulary are single bytes of a longer character.
    expect(ids.some((id) => tokenizer.decode([id]).includes('\uFFFD'))).toBe(true);
    const stream = tokenizer.createStreamDecoder();
    const pieces: string[] = [];
    for (const id of ids) {
      const piece = stream.push(id);
      expect(piece).not.toContain('\uFFFD');
      pieces.push(piece);
    }
    pieces.push(stream.flush());
    expect(pieces.join('')).toBe(text);
  });

  it('flushes an incomplete character at the end as U+FFFD', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    const ids = tokenizer.encode('🙂');
    const partial = ids.find((id) => tokenizer.decode([id]).includes('\uFFFD'));
    expect(partial).toBeDefined();
    const stream = tokenizer.createStreamDecoder();
    expect(stream.push(319)).toBe('def');
    expect(stream.push(partial!)).toBe('');
    expect(stream.flush()).toContain('\uFFFD');
  });

  it('has no chat template, and says so', async () => {
    const tokenizer = await Tokenizer.load(modelDir);
    expect(tokenizer.hasChatTemplate).toBe(false);
    expect(() => tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(TokenizerError);
    expect(() => tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/has no chat_template/);
  });
});

describe('chat templates', () => {
  const template =
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}{% endfor %}" +
    '{% if add_generation_prompt %}<|assistant|>{% endif %}';
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
  ];

  async function folderWith(files: Record<string, string>): Promise<string> {
    const folder = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-tokenizer-'));
    await fsp.copyFile(path.join(modelDir, 'tokenizer.json'), path.join(folder, 'tokenizer.json'));
    for (const [name, text] of Object.entries(files)) await fsp.writeFile(path.join(folder, name), text);
    return folder;
  }

  it('renders tokenizer_config.json chat_template with the special tokens', async () => {
    const folder = await folderWith({
      'tokenizer_config.json': JSON.stringify({ bos_token: '<|endoftext|>', eos_token: { content: '<|endoftext|>' }, chat_template: template }),
    });
    try {
      const tokenizer = await Tokenizer.load(folder);
      expect(tokenizer.hasChatTemplate).toBe(true);
      expect(tokenizer.applyChatTemplate(messages)).toBe(
        '<|endoftext|><|system|>Be brief.<|endoftext|><|user|>Hi<|endoftext|><|assistant|>',
      );
      expect(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: false }).endsWith('<|assistant|>')).toBe(false);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });

  it('prefers chat_template.jinja (transformers 5) and supports named templates', async () => {
    const folder = await folderWith({
      'tokenizer_config.json': JSON.stringify({
        eos_token: '<|endoftext|>',
        chat_template: [
          { name: 'default', template: 'old' },
          { name: 'tool_use', template: '{{ tools | length }} tools' },
        ],
      }),
      'chat_template.jinja': '{% for message in messages %}{{ message.content }}|{% endfor %}',
    });
    try {
      const tokenizer = await Tokenizer.load(folder);
      expect(tokenizer.applyChatTemplate(messages)).toBe('Be brief.|Hi|');
      expect(tokenizer.applyChatTemplate(messages, { templateName: 'tool_use', tools: [{}, {}] })).toBe('2 tools');
      expect(() => tokenizer.applyChatTemplate(messages, { templateName: 'rag' })).toThrow(/no chat template named "rag"; available: default, tool_use/);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });

  it('reports a template that raises', async () => {
    const folder = await folderWith({
      'tokenizer_config.json': JSON.stringify({ chat_template: "{{ raise_exception('roles must alternate') }}" }),
    });
    try {
      const tokenizer = await Tokenizer.load(folder);
      expect(() => tokenizer.applyChatTemplate(messages)).toThrow(/failed to render \(.*roles must alternate/);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });

  it('names a folder without tokenizer.json', async () => {
    const folder = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-tokenizer-'));
    try {
      await expect(Tokenizer.load(folder)).rejects.toThrow(/tokenizer\.json: cannot read \(ENOENT\)/);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });
});
