// Prints a Markdown table of a Strata bench report beside a PyTorch report (same configurations, same GPU).
//   npx tsx bench/summarize.ts bench/results/<strata>.json [bench/results/<pytorch>.json]
import * as fs from 'node:fs';

interface TorchRow { config: string; dtype: string; batch: number; mode?: string; prefillTokensPerSecond?: number; decodeTokensPerSecond?: number; error?: string }

const [strataFile, torchFile] = process.argv.slice(2);
const strata = JSON.parse(fs.readFileSync(strataFile!, 'utf8'));
const torch: TorchRow[] = torchFile ? JSON.parse(fs.readFileSync(torchFile, 'utf8')).results : [];
const f = (x: number | undefined, d = 0) => (x === undefined ? '-' : x.toFixed(d));
const lines = [
  `Copy roofline ${f(strata.ops.copyGBps)} GB/s; matvec ${strata.ops.matvec.map((m: { storage: string; GBps: number; fractionOfCopy: number }) => `${m.storage} ${f(m.GBps)} GB/s (${f(m.fractionOfCopy * 100)}%)`).join(', ')}; 15-op elementwise chain fused ${f(strata.ops.elementwiseChain.fusedMs, 3)} ms vs unfused ${f(strata.ops.elementwiseChain.unfusedMs, 3)} ms.`,
  '',
  '| config | weights | batch | Strata prefill tok/s | Strata decode tok/s | dispatches/step | roofline | PyTorch eager prefill | PyTorch eager decode |',
  '|---|---|---|---|---|---|---|---|---|',
];
for (const m of strata.models) {
  const dt = m.storage === 'f32' ? 'float32' : 'float16';
  const t = torch.find((r) => r.config === m.config && r.dtype === dt && r.batch === m.batch && r.mode === 'eager');
  lines.push(`| ${m.config} | ${m.storage}${m.fused ? '' : ' (fusion off)'} | ${m.batch} | ${f(m.prefillTokensPerSecond)} | ${f(m.decodeTokensPerSecond, 1)} | ${m.dispatchesPerDecodeStep} | ${f(m.rooflineFraction * 100, 1)}% | ${m.fused ? f(t?.prefillTokensPerSecond) : ''} | ${m.fused ? f(t?.decodeTokensPerSecond, 1) : ''} |`);
}
console.log(lines.join('\n'));
