// `strata serve-demo`: serves the browser demo (examples/browser/), the browser bundle and a model folder on
// localhost. In a checkout the bundle is built from the sources first (esbuild); an installed package serves its
// dist/browser.js.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { StrataUserError } from '../base/errors.ts';
import { DEFAULT_MODEL } from './generate.ts';
import { type StaticServer, serveStatic } from './staticServer.ts';

const here = (relative: string) => fileURLToPath(new URL(relative, import.meta.url));

export interface DemoServer extends StaticServer {
  /** The demo page's URL. */
  page: string;
}

/** The folder holding browser.js: built from the sources into a temp folder in a checkout, dist/ when installed. */
async function browserBundle(): Promise<{ folder: string; temporary: boolean }> {
  if (!fs.existsSync(here('../browser.ts'))) return { folder: here('.'), temporary: false };
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bundle-'));
  const script = '../scripts/build.mjs'; // a variable: the package build must not bundle the build script
  const { buildBrowser } = (await import(script)) as typeof import('../scripts/build.mjs');
  await buildBrowser(folder);
  return { folder, temporary: true };
}

/** Serves the demo page at /, the bundle at /strata/, the model at /model/, and `extra` mounts. */
export async function startDemoServer(options: { model: string; port?: number; extra?: Record<string, string> }): Promise<DemoServer> {
  const model = path.resolve(options.model);
  if (!fs.existsSync(path.join(model, 'config.json'))) throw new StrataUserError(`'${options.model}' has no config.json, so it is not a model folder: pass --model <folder of a Hugging Face checkpoint>`);
  const bundle = await browserBundle();
  const server = await serveStatic({ '/': here('../examples/browser'), '/strata/': bundle.folder, '/model/': model, ...options.extra }, options.port ?? 0);
  return {
    ...server,
    page: `${server.url}/`,
    close: async () => {
      await server.close();
      if (bundle.temporary) fs.rmSync(bundle.folder, { recursive: true, force: true });
    },
  };
}

export function register(program: Command): void {
  program
    .command('serve-demo')
    .description('Serve the browser demo page with a model on localhost (open the printed URL in a browser with WebGPU)')
    .option('--model <dir>', 'model folder served at /model/', DEFAULT_MODEL)
    .option('--port <n>', 'port (0: any free one)', '8080')
    .action(async (opts: { model: string; port: string }) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new StrataUserError(`--port: expected a port number 0..65535, got '${opts.port}'`);
      const server = await startDemoServer({ model: opts.model, port });
      console.log(`Strata demo: ${server.page}  (model ${opts.model} at ${server.url}/model/; Ctrl-C stops)`);
      await new Promise<void>((resolve) => {
        for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
      });
      await server.close();
    });
}
