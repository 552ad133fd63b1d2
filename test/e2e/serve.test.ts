// strata serve on tiny-granite-code (4 slots, a prefix cache): the official `openai` client streams a chat
// completion; 32 concurrent clients each get what they get alone with the same seed; a 10-turn chat prefills
// only each new turn; bad requests get OpenAI's statuses and error bodies; a client that disconnects frees its slot.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Session } from '../../runtime/session.ts';
import { readMetric } from '../../serve/metrics.ts';
import { type StrataServer, startServer } from '../../serve/server.ts';

const DIR = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');
const CHAT_TEMPLATE = fs.readFileSync(path.resolve(import.meta.dirname, '../fixtures/serve/chat_template.jinja'), 'utf8');
const MODEL = 'tiny-granite-code';

let session: Session;
let server: StrataServer;
let client: OpenAI;

beforeAll(async () => {
  session = await Session.load(DIR, { slots: 4, capacity: 512, prefillChunks: [16], stepsPerSubmit: 4, prefixCache: { entries: 6, every: 16 } });
  server = await startServer(session, { port: 0, chatTemplate: CHAT_TEMPLATE });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
  await session?.close();
});

async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: { error?: { message: string; type: string; param: string | null; code: string | null } } }> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: response.status, json: await response.json() };
}

async function metrics(): Promise<string> {
  return (await fetch(`${server.url}/metrics`)).text();
}

/** Resolves once every sequence of the session has ended (slots free). */
async function drained(): Promise<void> {
  while (session.sequences().length) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe('the openai client', () => {
  test('lists the model and streams a chat completion equal to the same request unstreamed', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    const request = { model: MODEL, messages: [{ role: 'user' as const, content: 'def fibonacci(n):' }], max_tokens: 10, temperature: 0 };
    const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? '';
        finish = choice.finish_reason ?? finish;
        chunks++;
      }
    }
    expect(chunks).toBeGreaterThan(1);
    const whole = await client.chat.completions.create(request);
    expect(whole.choices[0]!.message.content).toBe(text);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(usage!.completion_tokens).toBe(whole.usage!.completion_tokens);
    expect(usage!.prompt_tokens).toBe(whole.usage!.prompt_tokens);
  });
});

describe('continuous batching', () => {
  test('32 concurrent clients against 4 slots all complete, each equal to its single-client run with the same seed', async () => {
    const requests = Array.from({ length: 32 }, (_, i) => ({
      model: MODEL,
      prompt: `# helper ${i}\ndef f${i}(x):\n`,
      max_tokens: 2 + (i % 4),
      temperature: 0.9,
      top_p: 0.95,
      seed: 1000 + i,
    }));
    const alone: string[] = [];
    for (const request of requests) alone.push((await client.completions.create(request)).choices[0]!.text);
    let busiest = 0;
    const watch = setInterval(() => (busiest = Math.max(busiest, session.sequences().length)), 5);
    const together = await Promise.all(requests.map((request) => client.completions.create(request)));
    clearInterval(watch);
    expect(busiest).toBeGreaterThan(4); // more clients than slots: some waited
    together.forEach((response, i) => {
      expect(response.choices[0]!.text, `client ${i}`).toBe(alone[i]);
      expect(response.usage!.completion_tokens).toBeLessThanOrEqual(requests[i]!.max_tokens);
    });
    await drained();
  });
});

describe('prefix cache over the server', () => {
  test('a 10-turn chat prefills only each new turn', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: 'Python.' }];
    let previous: OpenAI.CompletionUsage | undefined;
    const cachedBefore = readMetric(await metrics(), 'cached_prompt_tokens_total') ?? 0;
    let cachedSum = 0;
    for (let turn = 0; turn < 10; turn++) {
      messages.push({ role: 'user', content: `def g${turn}(a):` });
      const reply = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 4, temperature: 0 });
      const usage = reply.usage!;
      const cached = usage.prompt_tokens_details!.cached_tokens!;
      if (previous) {
        // everything the previous turn fed (its prompt and its reply but the newest token) comes from the cache
        expect(cached, `turn ${turn}`).toBe(previous.prompt_tokens + previous.completion_tokens - 1);
        const newTurn = usage.prompt_tokens - previous.prompt_tokens - previous.completion_tokens + 1;
        expect(usage.prompt_tokens - cached, `turn ${turn}: tokens prefilled`).toBe(newTurn);
      }
      cachedSum += cached;
      messages.push({ role: 'assistant', content: reply.choices[0]!.message.content ?? '' });
      previous = usage;
    }
    expect((readMetric(await metrics(), 'cached_prompt_tokens_total') ?? 0) - cachedBefore).toBe(cachedSum);
    expect(readMetric(await metrics(), 'prefix_cache_hits_total')).toBeGreaterThanOrEqual(9);
  });
});

describe('requests that cannot be served', () => {
  test('malformed JSON, unknown model, negative max_tokens and a prompt over the context get 400/404 with OpenAI error bodies', async () => {
    const url = `${server.url}/v1/completions`;
    const malformed = await post(url, '{"model": "tiny-granite-code", "prompt": ');
    expect(malformed.status).toBe(400);
    expect(malformed.json.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_json' });

    const unknown = await post(url, JSON.stringify({ model: 'gpt-4o', prompt: 'x' }));
    expect(unknown.status).toBe(404);
    expect(unknown.json.error).toMatchObject({ type: 'not_found_error', param: 'model', code: 'model_not_found' });
    await expect(client.completions.create({ model: 'gpt-4o', prompt: 'x' })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });

    const negative = await post(url, JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: -1 }));
    expect(negative.status).toBe(400);
    expect(negative.json.error).toMatchObject({ type: 'invalid_request_error', param: 'max_tokens' });

    const tooLong = await post(url, JSON.stringify({ model: MODEL, prompt: Array.from({ length: 600 }, (_, i) => 1 + (i % 200)) }));
    expect(tooLong.status).toBe(400);
    expect(tooLong.json.error).toMatchObject({ code: 'context_length_exceeded', param: 'prompt' });
    expect(tooLong.json.error!.message).toMatch(/maximum context length is 512 tokens/);
    const notRoom = await post(`${server.url}/v1/chat/completions`, JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 512 }));
    expect(notRoom.status).toBe(400);
    expect(notRoom.json.error!.code).toBe('context_length_exceeded');
    expect(session.sequences()).toEqual([]);
  });

  test('a body over the limit gets 413, and a request past the queue 503', async () => {
    const small = await startServer(session, { port: 0, maxBodyBytes: 1024, maxQueue: 0 });
    try {
      const big = await post(`${small.url}/v1/completions`, JSON.stringify({ model: MODEL, prompt: 'x'.repeat(2000) }));
      expect(big.status).toBe(413);
      // four long streams fill the four slots; with no queue the fifth request is refused
      const streams = await Promise.all(Array.from({ length: 4 }, (_, i) => openStream(small.url, { model: MODEL, prompt: `def h${i}():`, max_tokens: 200, temperature: 0, stream: true })));
      const refused = await post(`${small.url}/v1/completions`, JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 2 }));
      expect(refused.status).toBe(503);
      expect(refused.json.error).toMatchObject({ type: 'overloaded_error', code: 'queue_full' });
      for (const s of streams) s.destroy();
      await drained();
    } finally {
      await small.close();
    }
  });

  test('a client that disconnects mid-stream frees its slot', async () => {
    const abortedBefore = readMetric(await metrics(), 'choices_finished_total', '{reason="aborted"}') ?? 0;
    const generatedBefore = readMetric(await metrics(), 'generated_tokens_total') ?? 0;
    const stream = await openStream(server.url, { model: MODEL, prompt: 'def fibonacci(n):\n', max_tokens: 200, temperature: 0, stream: true, n: 2 });
    expect(session.sequences()).toHaveLength(2);
    stream.destroy();
    await drained();
    const after = await metrics();
    expect(readMetric(after, 'choices_finished_total', '{reason="aborted"}')! - abortedBefore).toBe(2);
    expect(readMetric(after, 'generated_tokens_total')! - generatedBefore).toBeLessThan(2 * 200);
    expect(readMetric(after, 'slots_busy')).toBe(0);
    // the freed slots serve the next request
    const next = await client.completions.create({ model: MODEL, prompt: 'def f(x):', max_tokens: 2, temperature: 0 });
    expect(next.choices[0]!.finish_reason).toBe('length');
  });
});

/** Starts a streaming request and resolves once its first event arrived; destroy() disconnects. */
function openStream(base: string, body: object): Promise<http.ClientRequest> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.once('data', () => resolve(req));
      res.on('error', () => {});
    });
    req.on('error', () => {});
    req.end(JSON.stringify(body));
  });
}
