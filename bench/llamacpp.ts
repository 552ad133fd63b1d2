// Reads what ../shared/tools/peers/run-llamacpp.sh leaves in its output folder: llama-bench.jsonl (one line per
// model file and test, tagged "<config>-<f16|f32>") and batched.txt (llama-batched-bench tables, f16 only).
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface LlamaCppFigures {
  /** llama-bench tg128: new tokens per second at batch 1. */
  decodeB1?: number;
  /** llama-batched-bench S_TG at batch 8: generated tokens per second summed over the 8 sequences. */
  decodeB8?: number;
  /** llama-bench pp128: prompt tokens per second at batch 1. */
  prefill128?: number;
}

/** Figures by `${config}-${f16|f32}`. */
export function readLlamaCpp(dir: string): Map<string, LlamaCppFigures> {
  const figures = new Map<string, LlamaCppFigures>();
  const entry = (tag: string) => figures.get(tag) ?? (figures.set(tag, {}), figures.get(tag)!);
  const jsonl = path.join(dir, 'llama-bench.jsonl');
  if (fs.existsSync(jsonl)) {
    for (const line of fs.readFileSync(jsonl, 'utf8').split('\n')) {
      if (!line.trim().startsWith('{')) continue;
      const d = JSON.parse(line) as { tag?: string; n_prompt?: number; n_gen?: number; avg_ts?: number };
      if (!d.tag || d.avg_ts === undefined) continue;
      if (d.n_prompt && !d.n_gen) entry(d.tag).prefill128 = d.avg_ts;
      else if (d.n_gen && !d.n_prompt) entry(d.tag).decodeB1 = d.avg_ts;
    }
  }
  const batched = path.join(dir, 'batched.txt');
  if (fs.existsSync(batched)) {
    // "== <config> f16", then rows "|    PP |     TG |    B |   N_KV |  T_PP s | S_PP t/s | T_TG s | S_TG t/s | ..."
    let tag: string | undefined;
    for (const line of fs.readFileSync(batched, 'utf8').split('\n')) {
      const header = /^== (\S+) (f16|f32)/.exec(line);
      if (header) tag = `${header[1]}-${header[2]}`;
      const cells = line.split('|').map((c) => c.trim()).filter((c) => c !== '');
      if (!tag || cells.length !== 10 || !/^\d+$/.test(cells[0]!)) continue;
      if (Number(cells[2]) === 8) entry(tag).decodeB8 = Number(cells[7]); // the last table of a tag wins
    }
  }
  return figures;
}
