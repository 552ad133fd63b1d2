// The OpenAI API's request bodies as strata serve accepts them (zod, at the edge), and its error shape: a
// request that cannot be served gets the status and `{ error: { message, type, param, code } }` OpenAI sends.
import { z } from 'zod';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: 'invalid_request_error' | 'not_found_error' | 'server_error' | 'overloaded_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) => new ApiError(400, message, 'invalid_request_error', param, code);

const stop = z.union([z.string(), z.array(z.string()).max(4)]).nullish();

/** What both endpoints share: sampling, limits, streaming. Unknown fields are accepted (clients send many). */
const common = {
  model: z.string(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  seed: z.number().int().nullish(),
  stop,
  // accepted only at their neutral values: strata's sampler has no presence/frequency penalties or logprobs
  presence_penalty: z.literal(0).nullish(),
  frequency_penalty: z.literal(0).nullish(),
  logprobs: z.union([z.literal(false), z.null()]).optional(),
  user: z.string().nullish(),
};

const tokenIds = z.array(z.number().int().min(0)).min(1);

export const CompletionRequest = z.looseObject({
  ...common,
  prompt: z.union([z.string(), tokenIds, z.array(z.string()).min(1), z.array(tokenIds).min(1)]),
  echo: z.literal(false).nullish(),
  best_of: z.literal(1).nullish(),
  suffix: z.null().optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

const textPart = z.looseObject({ type: z.literal('text'), text: z.string() });
const message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(textPart), z.null()]),
  name: z.string().nullish(),
});

export const ChatRequest = z.looseObject({
  ...common,
  messages: z.array(message).min(1),
  max_completion_tokens: z.number().int().min(1).nullish(),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

/** A body that fails its schema: 400 naming the first bad field as OpenAI's `param`. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const param = issue.path.map(String).join('.') || null;
  const neutral = param && ['presence_penalty', 'frequency_penalty', 'logprobs', 'echo', 'best_of', 'suffix'].includes(param);
  const why = neutral ? `${param} is not supported by strata serve (only its default value)` : issue.message;
  throw badRequest(param ? `Invalid value for '${param}': ${why}` : `Invalid request body: ${why}`, param, neutral ? 'unsupported_parameter' : 'invalid_value');
}
