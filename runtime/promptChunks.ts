// How a prompt is fed: in chunks of the compiled prefill sizes, each the smallest size that holds what is left
// (else the largest), the last one padded. Used by every prefill path (the generator's and ModelRunner's).

export interface PromptChunk {
  /** First prompt index of the chunk. */
  at: number;
  /** Real tokens in it. */
  tokens: number;
  /** The compiled chunk size it runs in (tokens <= bucket; the rest is padding). */
  bucket: number;
}

export function promptChunks(length: number, sizes: readonly number[]): PromptChunk[] {
  const sorted = [...new Set(sizes)].sort((a, b) => a - b);
  if (!sorted.length || sorted[0]! < 1) throw new RangeError(`prefill chunk sizes must be positive integers, got [${sizes.join(', ')}]`);
  const out: PromptChunk[] = [];
  for (let at = 0; at < length; ) {
    const left = length - at;
    const bucket = sorted.find((c) => c >= left) ?? sorted[sorted.length - 1]!;
    const tokens = Math.min(bucket, left);
    out.push({ at, tokens, bucket });
    at += tokens;
  }
  return out;
}
