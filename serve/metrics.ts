// What `GET /metrics` reports, in Prometheus' text format: requests by status and finish reason, tokens in and
// out, generation throughput over the last minute, slots and queue, and the prefix cache's hit rate and bytes.
import type { Session } from '../runtime/session.ts';

const WINDOW_MS = 60_000;

export class ServerMetrics {
  readonly requests = new Map<number, number>(); // by HTTP status
  readonly finished = new Map<string, number>(); // choices by finish reason
  promptTokens = 0;
  cachedPromptTokens = 0;
  generatedTokens = 0;
  /** Sequences admitted by this server and not finished, and those of them that hold a slot. */
  readonly live = new Set<{ slot: number; isFinished: boolean }>();
  private readonly recent: { at: number; tokens: number }[] = [];

  countRequest(status: number): void {
    this.requests.set(status, (this.requests.get(status) ?? 0) + 1);
  }

  countFinish(reason: string): void {
    this.finished.set(reason, (this.finished.get(reason) ?? 0) + 1);
  }

  countGenerated(tokens: number): void {
    if (tokens <= 0) return;
    this.generatedTokens += tokens;
    this.recent.push({ at: Date.now(), tokens });
  }

  /** Tokens generated per second over the last minute (or since the first token, if sooner). */
  tokensPerSecond(now = Date.now()): number {
    while (this.recent.length && this.recent[0]!.at < now - WINDOW_MS) this.recent.shift();
    if (!this.recent.length) return 0;
    const span = Math.max(1000, now - this.recent[0]!.at);
    return (this.recent.reduce((a, r) => a + r.tokens, 0) * 1000) / span;
  }

  render(session: Session, modelName: string): string {
    const lines: string[] = [];
    const metric = (name: string, help: string, type: 'counter' | 'gauge', values: [string, number][]) => {
      lines.push(`# HELP strata_${name} ${help}`, `# TYPE strata_${name} ${type}`);
      for (const [labels, value] of values) lines.push(`strata_${name}${labels} ${Number.isFinite(value) ? value : 0}`);
    };
    const model = `model="${modelName}"`;
    const running = [...this.live].filter((s) => s.slot >= 0 && !s.isFinished).length;
    metric('requests_total', 'HTTP requests answered, by status', 'counter', [...this.requests].map(([status, n]) => [`{status="${status}"}`, n]));
    metric('choices_finished_total', 'Completions (choices) ended, by finish reason', 'counter', [...this.finished].map(([reason, n]) => [`{reason="${reason}"}`, n]));
    metric('prompt_tokens_total', 'Prompt tokens of admitted requests', 'counter', [[`{${model}}`, this.promptTokens]]);
    metric('cached_prompt_tokens_total', 'Prompt tokens restored from the prefix cache instead of prefilled', 'counter', [[`{${model}}`, this.cachedPromptTokens]]);
    metric('generated_tokens_total', 'Tokens generated', 'counter', [[`{${model}}`, this.generatedTokens]]);
    metric('generated_tokens_per_second', 'Tokens generated per second over the last minute', 'gauge', [[`{${model}}`, this.tokensPerSecond()]]);
    metric('slots', 'Sequence slots', 'gauge', [[`{${model}}`, session.slots]]);
    metric('slots_busy', 'Slots running a sequence of this server', 'gauge', [[`{${model}}`, running]]);
    metric('queue_waiting', 'Sequences waiting for a slot', 'gauge', [[`{${model}}`, Math.max(0, session.sequences().length - running)]]);
    const cache = session.prefixCache?.stats();
    if (cache) {
      metric('prefix_cache_lookups_total', 'Prompts looked up in the prefix cache', 'counter', [[`{${model}}`, cache.lookups]]);
      metric('prefix_cache_hits_total', 'Prompts that started from a cached prefix', 'counter', [[`{${model}}`, cache.hits]]);
      metric('prefix_cache_hit_rate', 'Hits over lookups', 'gauge', [[`{${model}}`, cache.lookups ? cache.hits / cache.lookups : 0]]);
      metric('prefix_cache_token_hit_rate', 'Prompt tokens restored over prompt tokens looked up', 'gauge', [[`{${model}}`, cache.lookupTokens ? cache.hitTokens / cache.lookupTokens : 0]]);
      metric('prefix_cache_entries', 'Prefixes held', 'gauge', [[`{${model}}`, cache.entries]]);
      metric('prefix_cache_bytes', 'Device bytes the held prefixes occupy', 'gauge', [[`{${model}}`, cache.bytes]]);
      metric('prefix_cache_budget_bytes', 'Device bytes reserved for the prefix cache', 'gauge', [[`{${model}}`, cache.budgetBytes]]);
      metric('prefix_cache_evictions_total', 'Prefixes evicted (least recently used)', 'counter', [[`{${model}}`, cache.evictions]]);
    }
    return `${lines.join('\n')}\n`;
  }
}

/** One metric's value from the text format (tests and the load script read it back). */
export function readMetric(text: string, name: string, labels = ''): number | undefined {
  const prefix = `strata_${name}${labels}`;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const [key, value] = [line.slice(0, line.lastIndexOf(' ')), line.slice(line.lastIndexOf(' ') + 1)];
    if (key === prefix || (!labels && key.startsWith(`${prefix}{`))) return Number(value);
  }
  return undefined;
}
