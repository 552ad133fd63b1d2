// GGUF files Strata cannot use are refused with one typed line naming the file and what was expected (the
// parity of files it can use is test/models/gguf.test.ts).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { GGUFValueType, serializeGgufMetadata } from '@huggingface/gguf';
import { GgufError, openGguf } from '../../runtime/gguf.ts';
import { isUserError } from '../../base/errors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-gguf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A GGUF header without tensors, with these string (or uint32) metadata entries. */
function header(entries: Record<string, string | number>): Uint8Array {
  const typed = Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, { value: v, type: typeof v === 'number' ? GGUFValueType.UINT32 : GGUFValueType.STRING }]));
  return serializeGgufMetadata({ version: { value: 3, type: GGUFValueType.UINT32 }, tensor_count: { value: 0n, type: GGUFValueType.UINT64 }, kv_count: { value: BigInt(Object.keys(entries).length), type: GGUFValueType.UINT64 }, ...typed } as never);
}

async function refusal(file: string): Promise<Error> {
  const error = await openGguf(file).then(() => undefined, (e: Error) => e);
  expect(error).toBeInstanceOf(GgufError);
  expect(isUserError(error)).toBe(true);
  expect(error!.message).not.toContain('\n');
  return error!;
}

describe('GGUF files that are refused', () => {
  test('a file that is not GGUF', async () => {
    const file = path.join(tmp, 'text.gguf');
    fs.writeFileSync(file, 'not a gguf file at all, just some text');
    expect((await refusal(file)).message).toMatch(/text\.gguf: not a readable GGUF file/);
  });

  test('a missing file', async () => {
    expect((await refusal(path.join(tmp, 'missing.gguf'))).message).toMatch(/missing\.gguf: not a readable GGUF file/);
  });

  test('an architecture with no mapping to a Strata family', async () => {
    const file = path.join(tmp, 'gpt2.gguf');
    fs.writeFileSync(file, header({ 'general.architecture': 'gpt2' }));
    expect((await refusal(file)).message).toBe(`${file}: GGUF architecture "gpt2" is not mapped to a Strata family (mapped: llama, granitehybrid, mamba, mamba2, jamba, lfm2, gemma3n, falcon-h1, qwen3next)`);
  });

  test('a Qwen3-Next file with MTP layers (converted without --no-mtp)', async () => {
    const file = path.join(tmp, 'mtp.gguf');
    fs.writeFileSync(file, header({ 'general.architecture': 'qwen3next', 'qwen3next.nextn_predict_layers': 1 }));
    expect((await refusal(file)).message).toBe('GGUF qwen3next with 1 MTP layers: not mapped (convert with --no-mtp)');
  });
});
