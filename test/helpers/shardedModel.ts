// tiny-granite-code re-written as a two-shard checkpoint (model.safetensors.index.json + two shard files) in a temp
// folder, beside its config and tokenizer: the fixture for loading sharded checkpoints over HTTP range requests.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isSafetensorsDtype, openSafetensors } from '../../base/safetensors.ts';
import { type TensorToWrite, writeSafetensors } from '../../base/safetensorsWrite.ts';

export const TINY_MODEL = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');

export interface ShardedModel {
  folder: string;
  shards: string[];
  /** Bytes of the largest tensor: no checkpoint read needs more at once. */
  largestTensorBytes: number;
  remove(): void;
}

export async function writeShardedTinyModel(): Promise<ShardedModel> {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-sharded-'));
  for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'reference.json']) fs.copyFileSync(path.join(TINY_MODEL, file), path.join(folder, file));
  const source = await openSafetensors(TINY_MODEL);
  const names = source.tensorNames().sort();
  const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const parts: Map<string, TensorToWrite>[] = [new Map(), new Map()];
  const weightMap: Record<string, string> = {};
  let largestTensorBytes = 0;
  for (const [i, name] of names.entries()) {
    const tensor = await source.readTensor(name);
    if (!isSafetensorsDtype(tensor.dtype)) throw new Error(`${name}: ${tensor.dtype} is not a safetensors dtype`);
    const shard = i < names.length / 2 ? 0 : 1;
    parts[shard]!.set(name, { dtype: tensor.dtype, shape: tensor.shape, data: tensor.bytes });
    weightMap[name] = shards[shard]!;
    largestTensorBytes = Math.max(largestTensorBytes, tensor.bytes.byteLength);
  }
  await source.close();
  for (const [i, shard] of shards.entries()) await writeSafetensors(path.join(folder, shard), parts[i]!, { format: 'pt' });
  fs.writeFileSync(path.join(folder, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return { folder, shards, largestTensorBytes, remove: () => fs.rmSync(folder, { recursive: true, force: true }) };
}
