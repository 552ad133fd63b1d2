// strata serve: an OpenAI-compatible HTTP server over one Session. Node's own http module: the API is five
// routes, server-sent events are plain writes, and a client that goes away is one 'close' event that aborts its
// sequences (their slots free at the next submission boundary); a framework would add a dependency and still
// hand streaming back to the raw response. Continuous batching is the session's: every request's sequences
// join the decode batch between submissions and leave it when they end.
import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Template } from '@huggingface/jinja';
import { isUserError } from '../base/errors.ts';
import type { Generation, Session } from '../runtime/session.ts';
import type { ChatMessage } from '../runtime/tokenizer.ts';
import { ApiError, ChatRequest, CompletionRequest, badRequest, parseBody } from './api.ts';
import { ServerMetrics } from './metrics.ts';

export interface ServeOptions {
  /** The id clients pass as `model` (default: the model folder's name). */
  modelName?: string;
  host?: string;
  /** 0: any free port. */
  port?: number;
  /** Sequences that may wait for a slot beyond those running; a request that would exceed it gets 503. Default 64. */
  maxQueue?: number;
  /** A Jinja chat template that replaces the tokenizer's (for models that ship none). */
  chatTemplate?: string;
  /** Largest request body. Default 4 MiB. */
  maxBodyBytes?: number;
}

export interface StrataServer {
  readonly url: string;
  readonly modelName: string;
  readonly metrics: ServerMetrics;
  close(): Promise<void>;
}

type Handler = (context: RequestContext) => Promise<void>;

interface RequestContext {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  body: () => Promise<unknown>;
}

/** One choice to generate: its prompt's ids and the options of its sequence. */
interface ChoiceJob {
  index: number;
  promptIndex: number;
  ids: number[];
  seed: number | undefined;
}

export async function startServer(session: Session, options: ServeOptions = {}): Promise<StrataServer> {
  const modelName = options.modelName ?? session.modelDir.split(/[\\/]/).filter(Boolean).pop() ?? 'strata';
  const maxQueue = options.maxQueue ?? 64;
  const maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024;
  const metrics = new ServerMetrics();
  const template = options.chatTemplate === undefined ? undefined : new Template(options.chatTemplate);
  const created = Math.floor(Date.now() / 1000);

  const checkModel = (model: string) => {
    if (model !== modelName) throw new ApiError(404, `The model '${model}' does not exist (this server serves '${modelName}')`, 'not_found_error', 'model', 'model_not_found');
  };

  /** Ids of a text or token prompt, refused (400) when it cannot be encoded or does not fit with its completion. */
  const promptIds = (prompt: string | number[], maxTokens: number | undefined, param: string): number[] => {
    let ids: number[];
    try {
      ids = session.encode(typeof prompt === 'string' ? prompt : { ids: prompt });
    } catch (error) {
      if (isUserError(error)) throw badRequest((error as Error).message, param);
      throw error;
    }
    const bad = ids.find((id) => id >= session.model.vocabSize);
    if (bad !== undefined) throw badRequest(`token ${bad} is not an id of this model's vocabulary (0..${session.model.vocabSize - 1})`, param);
    const C = session.capacity;
    if (ids.length > C || (maxTokens !== undefined && ids.length + maxTokens > C))
      throw badRequest(
        `This model's maximum context length is ${C} tokens. However, you requested ${ids.length + (maxTokens ?? 0)} tokens (${ids.length} in the prompt, ${maxTokens ?? 0} for the completion). Please reduce the prompt or the completion length.`,
        param,
        'context_length_exceeded',
      );
    return ids;
  };

  const renderChat = (messages: ChatRequest['messages']): string => {
    const plain: ChatMessage[] = messages.map((m) => ({
      ...m,
      content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join(''),
    }));
    const tokenizer = session.tokenizer;
    if (!tokenizer) throw badRequest(`the model '${modelName}' has no tokenizer: use /v1/completions with token ids`, 'messages');
    if (template)
      return template.render({ messages: plain, add_generation_prompt: true, bos_token: tokenizer.bosToken ?? '', eos_token: tokenizer.eosToken ?? '' });
    if (!tokenizer.hasChatTemplate) throw badRequest(`the model '${modelName}' has no chat template: start strata serve with --chat-template FILE`, 'messages');
    try {
      return tokenizer.applyChatTemplate(plain);
    } catch (error) {
      if (isUserError(error)) throw badRequest((error as Error).message, 'messages');
      throw error;
    }
  };

  /** Starts every choice, or none: 503 when the queue cannot take them all. */
  const startChoices = (jobs: ChoiceJob[], request: CompletionRequest | ChatRequest, maxTokens: number | undefined, signal: AbortSignal): Generation[] => {
    const outstanding = session.sequences().length;
    if (outstanding + jobs.length > session.slots + maxQueue)
      throw new ApiError(503, `The server is overloaded: ${outstanding} sequences are running or waiting (at most ${session.slots + maxQueue}); retry later`, 'overloaded_error', null, 'queue_full');
    const stop = request.stop === undefined || request.stop === null ? [] : typeof request.stop === 'string' ? [request.stop] : request.stop;
    const C = session.capacity;
    const generations: Generation[] = [];
    try {
      for (const job of jobs) {
        const generation = session.generate(
          { ids: job.ids },
          {
            maxNewTokens: maxTokens ?? C - job.ids.length + 1,
            temperature: request.temperature ?? 1,
            topP: request.top_p ?? 1,
            ...(job.seed !== undefined ? { seed: job.seed } : {}),
            stop,
            signal,
          },
        );
        generations.push(generation);
        metrics.live.add(generation.sequence);
        void generation.sequence.finished.then(() => metrics.live.delete(generation.sequence));
      }
    } catch (error) {
      for (const g of generations) g.cancel();
      if (error instanceof RangeError || isUserError(error)) throw badRequest((error as Error).message);
      throw error;
    }
    const n = request.n ?? 1;
    for (const job of jobs) if (job.index % n === 0) metrics.promptTokens += job.ids.length;
    return generations;
  };

  /** Runs one choice to its end, calling `onText` with each piece; counts its tokens. */
  const runChoice = async (generation: Generation, onText: (text: string) => void): Promise<void> => {
    let counted = 0;
    for await (const piece of generation) {
      metrics.countGenerated(generation.sequence.ids.length - counted);
      counted = generation.sequence.ids.length;
      onText(piece);
    }
    metrics.countGenerated(generation.sequence.ids.length - counted);
    const reason = generation.finishReason ?? 'error';
    metrics.countFinish(reason);
    metrics.cachedPromptTokens += generation.stats?.cachedPromptTokens ?? 0;
  };

  const usageOf = (generations: Generation[], jobs: ChoiceJob[], n: number) => {
    const firsts = generations.filter((_, i) => jobs[i]!.index % n === 0);
    const prompt = firsts.reduce((a, g) => a + g.promptIds.length, 0);
    const cached = firsts.reduce((a, g) => a + (g.stats?.cachedPromptTokens ?? 0), 0);
    const completion = generations.reduce((a, g) => a + g.ids.length, 0);
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
  };

  /**
   * The shared body of both endpoints: start the choices, then either stream chunks (SSE) or answer once.
   * `chunk(index, text, finish)` and `choice(index, generation)` shape the endpoint's objects.
   */
  const serveChoices = async (
    ctx: RequestContext,
    request: CompletionRequest | ChatRequest,
    jobs: ChoiceJob[],
    maxTokens: number | undefined,
    shape: {
      id: string;
      object: string;
      chunkObject: string;
      chunk: (index: number, text: string | undefined, finish: string | null, first: boolean) => unknown;
      choice: (index: number, generation: Generation) => unknown;
    },
  ): Promise<void> => {
    const { res } = ctx;
    const abort = new AbortController();
    // a client that goes away (mid-stream or while waiting) frees its slots
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const generations = startChoices(jobs, request, maxTokens, abort.signal);
    const n = request.n ?? 1;
    const finishOf = (g: Generation) => (g.finishReason === 'length' ? 'length' : 'stop');
    if (!request.stream) {
      await Promise.all(generations.map((g) => runChoice(g, () => {})));
      if (abort.signal.aborted) return;
      sendJson(res, 200, {
        id: shape.id,
        object: shape.object,
        created: Math.floor(Date.now() / 1000),
        model: modelName,
        choices: generations.map((g, i) => shape.choice(jobs[i]!.index, g)),
        usage: usageOf(generations, jobs, n),
      });
      metrics.countRequest(200);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    metrics.countRequest(200);
    const event = (data: unknown) => {
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    const base = () => ({ id: shape.id, object: shape.chunkObject, created: Math.floor(Date.now() / 1000), model: modelName });
    await Promise.all(
      generations.map(async (g, i) => {
        const index = jobs[i]!.index;
        let first = true;
        await runChoice(g, (text) => {
          event({ ...base(), choices: [shape.chunk(index, text, null, first)] });
          first = false;
        });
        if (!abort.signal.aborted) event({ ...base(), choices: [shape.chunk(index, first ? '' : undefined, finishOf(g), first)] });
      }),
    ).catch((error: unknown) => {
      event({ error: errorBody(error).error });
    });
    if (abort.signal.aborted) return;
    if (request.stream_options?.include_usage) event({ ...base(), choices: [], usage: usageOf(generations, jobs, n) });
    res.end('data: [DONE]\n\n');
  };

  const seedOf = (request: CompletionRequest | ChatRequest, choice: number): number | undefined =>
    request.seed === undefined || request.seed === null ? undefined : (request.seed + choice) >>> 0;

  const routes: Record<string, Handler> = {
    'GET /v1/models': async ({ res }) => {
      sendJson(res, 200, { object: 'list', data: [{ id: modelName, object: 'model', created, owned_by: 'strata' }] });
      metrics.countRequest(200);
    },
    'GET /metrics': async ({ res }) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(metrics.render(session, modelName));
    },
    'POST /v1/completions': async (ctx) => {
      const request = parseBody(CompletionRequest, await ctx.body());
      checkModel(request.model);
      const maxTokens = request.max_tokens ?? 16;
      const prompts: (string | number[])[] =
        typeof request.prompt === 'string' ? [request.prompt] : typeof request.prompt[0] === 'number' ? [request.prompt as number[]] : (request.prompt as (string | number[])[]);
      const n = request.n ?? 1;
      const jobs = prompts.flatMap((prompt, p) => {
        const ids = promptIds(prompt, maxTokens, 'prompt');
        return Array.from({ length: n }, (_, c) => ({ index: p * n + c, promptIndex: p, ids, seed: seedOf(request, c) }));
      });
      await serveChoices(ctx, request, jobs, maxTokens, {
        id: `cmpl-${randomUUID()}`,
        object: 'text_completion',
        chunkObject: 'text_completion',
        chunk: (index, text, finish) => ({ index, text: text ?? '', logprobs: null, finish_reason: finish }),
        choice: (index, g) => ({ index, text: g.text, logprobs: null, finish_reason: g.finishReason === 'length' ? 'length' : 'stop' }),
      });
    },
    'POST /v1/chat/completions': async (ctx) => {
      const request = parseBody(ChatRequest, await ctx.body());
      checkModel(request.model);
      const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? undefined;
      const rendered = renderChat(request.messages);
      const ids = promptIds(session.tokenizer!.encode(rendered, { addSpecialTokens: false }), maxTokens, 'messages');
      const n = request.n ?? 1;
      const jobs = Array.from({ length: n }, (_, c) => ({ index: c, promptIndex: 0, ids, seed: seedOf(request, c) }));
      await serveChoices(ctx, request, jobs, maxTokens, {
        id: `chatcmpl-${randomUUID()}`,
        object: 'chat.completion',
        chunkObject: 'chat.completion.chunk',
        chunk: (index, text, finish, first) => ({
          index,
          delta: text === undefined ? {} : first ? { role: 'assistant', content: text } : { content: text },
          logprobs: null,
          finish_reason: finish,
        }),
        choice: (index, g) => ({
          index,
          message: { role: 'assistant', content: g.text, refusal: null },
          logprobs: null,
          finish_reason: g.finishReason === 'length' ? 'length' : 'stop',
        }),
      });
    },
  };

  const server = http.createServer((req, res) => {
    const route = `${req.method} ${(req.url ?? '/').split('?')[0]}`;
    const handler = routes[route];
    const ctx: RequestContext = { req, res, body: () => readJson(req, maxBodyBytes) };
    const run = handler ? handler(ctx) : Promise.reject(new ApiError(404, `Unknown request URL: ${route}`, 'invalid_request_error', null, 'unknown_url'));
    run.catch((error: unknown) => {
      if (!(error instanceof ApiError)) console.error(error);
      const status = error instanceof ApiError ? error.status : 500;
      metrics.countRequest(status);
      if (res.headersSent) {
        res.end();
        return;
      }
      sendJson(res, status, errorBody(error));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8080, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    modelName,
    metrics,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function errorBody(error: unknown) {
  if (error instanceof ApiError) return error.body();
  return new ApiError(500, `The server failed while answering: ${(error as Error)?.message ?? String(error)}`, 'server_error').body();
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The body as JSON: 413 past the limit, 400 when it does not parse. */
async function readJson(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = () => new ApiError(413, `The request body is larger than ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
  if (Number(req.headers['content-length'] ?? 0) > limit) {
    req.resume();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= limit) chunks.push(chunk);
  }
  if (size > limit) throw tooLarge();
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badRequest(`We could not parse the JSON body of your request (${(error as Error).message}). The body must be a JSON object.`, null, 'invalid_json');
  }
}
