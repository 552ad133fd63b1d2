// The safetensors folder a GGUF parity test compares against: an HF folder's own tensors (float32, as
// transformers saved them) rewritten with the values the converter's GGUF holds, so both paths must give the same
// logits: tensors the GGUF stores as F16 are rounded to f16 (and kept 16-bit), the others stay f32 as they were.
// Only the dtype is taken from the GGUF, never a value, so a mapping mistake still shows as a logit difference.
// Tensors named after the folder are left out (the fixtures leave out the token embedding and LM head, a plain
// rename in every layout, to stay small: the tests take them from the GGUF, see test/fixtures/gguf/README.md).
//   npx tsx scripts/gguf-reference-folder.ts <hf folder> <file.gguf> <out folder> [name ...]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSafetensors } from '../base/safetensors.ts';
import { f32ToF16Bits, toFloat32 } from '../base/tensorValues.ts';
import { type TensorToWrite, serializeSafetensors } from '../base/safetensorsWrite.ts';
import { openGguf } from '../runtime/gguf.ts';

const [hfDir, ggufFile, outDir, ...leftOut] = process.argv.slice(2);
if (!hfDir || !ggufFile || !outDir) throw new Error('usage: gguf-reference-folder.ts <hf folder> <file.gguf> <out folder> [name to leave out ...]');
const hf = await openSafetensors(hfDir);
const gguf = await openGguf(ggufFile);
const tensors: Record<string, TensorToWrite> = {};
const kept: string[] = [];
for (const name of hf.tensorNames().filter((n) => !leftOut.includes(n))) {
  const t = await hf.readTensor(name);
  if (gguf.checkpoint.has(name) && gguf.checkpoint.info(name).dtype === 'F16') {
    tensors[name] = { dtype: 'F16', shape: t.shape, data: Uint16Array.from(toFloat32(t, name), f32ToF16Bits) };
  } else {
    tensors[name] = { dtype: 'F32', shape: t.shape, data: toFloat32(t, name) };
    kept.push(name);
  }
}
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'model.safetensors'), serializeSafetensors(tensors));
fs.copyFileSync(path.join(hfDir, 'config.json'), path.join(outDir, 'config.json'));
console.log(`${outDir}: ${Object.keys(tensors).length} tensors, ${kept.length} kept f32, ${leftOut.length} left out`);
