// Prints the README tables of a Strata bench report: beside llama.cpp CUDA measured in the same lease (ratio
// Strata / llama.cpp), the full Strata table beside PyTorch where given, and the decode step by kernel template.
//   npx tsx bench/summarize.ts <strata.json>... [--llamacpp <run-llamacpp.sh output folder>] [--torch <pytorch.json>]
//   (a PyTorch report may also be given positionally, as before; several Strata reports are merged)
import * as fs from 'node:fs';
import type { ModelBenchCase } from './models.ts';
import type { BenchReport } from './main.ts';
import { type LlamaCppFigures, readLlamaCpp } from './llamacpp.ts';
import { gunzipSync } from 'node:zlib';

/** A results file, gzipped (`.json.gz`: committed results are kept small, the device call carries the tree) or not. */
const readJson = (file: string) => (file.endsWith('.gz') ? gunzipSync(fs.readFileSync(file)).toString('utf8') : fs.readFileSync(file, 'utf8'));

interface TorchRow { config: string; dtype: string; batch: number; mode?: string; prefillTokensPerSecond?: number; decodeTokensPerSecond?: number; error?: string }

const argv = process.argv.slice(2);
const value = (flag: string) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1] : undefined);
const files = argv.filter((a, i) => !a.startsWith('--') && !['--llamacpp', '--torch'].includes(argv[i - 1] ?? ''));
if (!files.length) {
  console.error('usage: npx tsx bench/summarize.ts <strata.json>... [--llamacpp DIR] [--torch pytorch.json]');
  process.exit(2);
}
// PyTorch reports hold `results`; several Strata reports (one run split over calls) are merged, the first one's ops kept
const reports = files.map((file) => JSON.parse(readJson(file)) as BenchReport & { results?: TorchRow[] });
const torchFile = value('--torch');
const torch: TorchRow[] = torchFile ? JSON.parse(readJson(torchFile)).results : reports.flatMap((r) => r.results ?? []);
const strataReports = reports.filter((r) => !r.results);
const strata = strataReports[0]!;
const llamaDir = value('--llamacpp');
const llama = llamaDir ? readLlamaCpp(llamaDir) : undefined;
const models = strataReports.flatMap((r) => r.models ?? []);
const f = (x: number | undefined, d = 0) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
const n = (x: number | undefined) => (x === undefined ? '-' : Math.round(x).toLocaleString('en-US'));
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`);
const find = (config: string, storage: string, batch: number) => models.find((m) => m.config === config && m.storage === storage && m.batch === batch && m.fused);
const lines: string[] = [];

if (strata.ops) {
  const o = strata.ops;
  lines.push(`Strata ${strata.commit} on ${String(strata.adapter.device || strata.adapter.description || strata.adapter.vendor)}, ${strata.date.slice(0, 10)}: copy roofline ${f(o.copyGBps)} GB/s; matvec ${o.matvec.map((m) => `${m.storage}${m.variant ? ` ${m.variant}` : ''}${m.batch === undefined ? '' : ` b${m.batch} ${m.rows}x${m.cols}`} ${f(m.GBps)} GB/s (${f(m.fractionOfCopy * 100)}%)`).join(', ')}; 15-op elementwise chain fused ${f(o.elementwiseChain.fusedMs, 3)} ms vs unfused ${f(o.elementwiseChain.unfusedMs, 3)} ms.`, '');
}

if (llama) {
  lines.push('| config | weights | decode b1: Strata | llama.cpp | ratio | decode b8 (total): Strata | llama.cpp | ratio | prefill 128 b1: Strata | llama.cpp | ratio |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const config of [...new Set(models.map((m) => m.config))]) {
    for (const storage of ['f16', 'f32']) {
      const b1 = find(config, storage, 1);
      const b8 = find(config, storage, 8);
      if (!b1 && !b8) continue;
      const l: LlamaCppFigures = llama.get(`${config}-${storage}`) ?? {};
      lines.push(`| ${config} | ${storage} | ${n(b1?.decodeTokensPerSecond)} | ${n(l.decodeB1)} | ${ratio(b1?.decodeTokensPerSecond, l.decodeB1)} | ${n(b8?.decodeTokensPerSecond)} | ${n(l.decodeB8)} | ${ratio(b8?.decodeTokensPerSecond, l.decodeB8)} | ${n(b1?.prefillTokensPerSecond)} | ${n(l.prefill128)} | ${ratio(b1?.prefillTokensPerSecond, l.prefill128)} |`);
    }
  }
  lines.push('', 'llama.cpp: llama-bench (pp128, tg128, batch 1) and llama-batched-bench (pp 128, tg 128, 8 sequences; S_TG summed over them), CUDA, same GGUF configurations; batch 8 measured for f16 only.', '');
}

lines.push(`| config | weights | batch | Strata prefill tok/s | Strata decode tok/s | dispatches/step | roofline |${torch.length ? ' PyTorch eager prefill | PyTorch eager decode |' : ''}`);
lines.push(`|---|---|---|---|---|---|---|${torch.length ? '---|---|' : ''}`);
for (const m of models) {
  const dt = m.storage === 'f32' ? 'float32' : 'float16';
  const t = torch.find((r) => r.config === m.config && r.dtype === dt && r.batch === m.batch && r.mode === 'eager');
  const torchCells = torch.length ? ` ${m.fused ? f(t?.prefillTokensPerSecond) : ''} | ${m.fused ? f(t?.decodeTokensPerSecond, 1) : ''} |` : '';
  lines.push(`| ${m.config} | ${m.storage}${m.fused ? '' : ' (fusion off)'} | ${m.batch} | ${f(m.prefillTokensPerSecond)} | ${f(m.decodeTokensPerSecond, 1)} | ${m.dispatchesPerDecodeStep} | ${f(m.rooflineFraction * 100, 1)}% |${torchCells}`);
}

const profiled = models.filter((m): m is ModelBenchCase & Required<Pick<ModelBenchCase, 'kernelProfile'>> => m.kernelProfile !== undefined && m.batch === 1 && m.storage === 'f16');
if (profiled.length) {
  lines.push('', 'Decode step by kernel template, f16 weights, batch 1 (ms summed over the step; bound bytes over time as a fraction of the copy roofline):', '');
  lines.push('| config | timer | template | kernels | ms | share | roofline |', '|---|---|---|---|---|---|---|');
  for (const m of profiled) {
    const p = m.kernelProfile;
    const timer = p.timer === 'timestamp' ? `timestamps${p.quantization?.quantized ? ' (quantized!)' : ''}` : `wall clock alone${p.quantization?.quantized ? ' (timestamps quantized)' : ''}`;
    for (const t of p.templates) lines.push(`| ${m.config} | ${timer} | ${t.template} | ${t.kernels} | ${f(t.ms, 3)} | ${f(t.shareOfTime * 100, 1)}% | ${f(t.fractionOfRoofline * 100, 1)}% |`);
  }
}
console.log(lines.join('\n'));
