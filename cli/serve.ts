// `strata serve`: loads a model folder into a session with a prefix cache and answers the OpenAI API on it
// (serve/server.ts) until SIGINT or SIGTERM.
import type { Command } from 'commander';
import { Template } from '@huggingface/jinja';
import { StrataUserError } from '../base/errors.ts';
import { describeReadFailure, readRegularTextFile } from '../base/files.ts';
import { Session } from '../runtime/session.ts';
import { startServer } from '../serve/server.ts';
import { DEFAULT_MODEL, integer, progressPrinter } from './generate.ts';

export class ServeOptionsError extends StrataUserError {
  override name = 'ServeOptionsError';
}

interface ServeCliOptions {
  model: string;
  modelName?: string;
  host: string;
  port: number;
  slots: number;
  capacity?: number;
  queue: number;
  prefixCache: number;
  prefixCacheEvery?: number;
  chatTemplate?: string;
  stepsPerSubmit?: number;
}

/** A chat template file, read and parsed before the model loads. */
async function readChatTemplate(file: string): Promise<string> {
  let source: string;
  try {
    source = await readRegularTextFile(file, 1 << 20);
  } catch (error) {
    throw new ServeOptionsError(`--chat-template ${file}: ${describeReadFailure(error)}`);
  }
  try {
    new Template(source);
  } catch (error) {
    throw new ServeOptionsError(`--chat-template ${file}: not a Jinja template (${(error as Error).message})`);
  }
  return source;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /metrics)')
    .option('--model <dir>', 'model folder (config.json, *.safetensors, tokenizer.json)', DEFAULT_MODEL)
    .option('--model-name <id>', "the id clients pass as 'model' (default: the folder's name)")
    .option('--host <address>', 'address to listen on (loopback by default)', '127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', integer('--port', 0), 8080)
    .option('--slots <n>', 'sequences decoded together (continuous batching)', integer('--slots', 1), 4)
    .option('--capacity <n>', 'tokens per sequence (prompt + output)', integer('--capacity', 1))
    .option('--queue <n>', 'sequences that may wait for a slot; more get 503', integer('--queue', 0), 64)
    .option('--prefix-cache <entries>', 'prompt prefixes kept on the GPU (each one slot of memory; 0: off)', integer('--prefix-cache', 0), 8)
    .option('--prefix-cache-every <n>', 'keep a prompt prefix every n tokens (default: the largest prefill chunk)', integer('--prefix-cache-every', 0))
    .option('--chat-template <file>', "a Jinja chat template, for models that ship none (replaces the tokenizer's)")
    .option('--steps-per-submit <k>', 'decode steps per GPU submission', integer('--steps-per-submit', 1))
    .action(async (options: ServeCliOptions) => {
      const chatTemplate = options.chatTemplate === undefined ? undefined : await readChatTemplate(options.chatTemplate);
      const progress = progressPrinter(true);
      const session = await Session.load(options.model, {
        onProgress: (e) => progress.update(e),
        slots: options.slots,
        // a server runs every bucket sooner or later: compile them all before the first request, not during one
        warmUp: 'all',
        ...(options.capacity !== undefined ? { capacity: options.capacity } : {}),
        ...(options.stepsPerSubmit !== undefined ? { stepsPerSubmit: options.stepsPerSubmit } : {}),
        prefixCache: { entries: options.prefixCache, ...(options.prefixCacheEvery !== undefined ? { every: options.prefixCacheEvery } : {}) },
      });
      progress.clear();
      const server = await startServer(session, {
        host: options.host,
        port: options.port,
        maxQueue: options.queue,
        ...(options.modelName !== undefined ? { modelName: options.modelName } : {}),
        ...(chatTemplate !== undefined ? { chatTemplate } : {}),
      });
      process.stderr.write(`strata: serving '${server.modelName}' at ${server.url}/v1 (${session.slots} slots, capacity ${session.capacity}); metrics at ${server.url}/metrics\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
      await session.close();
    });
}
