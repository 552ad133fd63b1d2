// Builds the package into dist/: JavaScript with esbuild (one bundle per entry), declarations with tsc.
//   dist/index.js    `strata` for Node (dependencies stay imports, resolved from node_modules)
//   dist/browser.js  `strata/browser`, self-contained ES module for a page (dependencies bundled; node:* modules
//                    stand-ins that refuse with a typed error; defaultSource.ts swapped for the fetch one)
//   dist/cli.js      the `strata` command (bin/strata.mjs runs it in an installed package)
//   dist/types/      .d.ts for both entries
// Usage: node scripts/build.mjs [--no-types]
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist');

/** Names each node: module is imported with across the sources (a new one fails the browser build, loudly). */
const NODE_EXPORTS = {
  fs: ['constants', 'promises', 'existsSync'],
  path: ['join', 'dirname', 'basename', 'resolve', 'relative', 'sep', 'extname'],
  url: ['fileURLToPath'],
  child_process: ['execFile', 'execSync', 'spawn'],
  os: ['hostname', 'cpus', 'tmpdir'],
};

/** The browser bundle's substitutions: node:crypto by @noble/hashes, the rest refusing, default source by fetch. */
const browserPlugin = {
  name: 'strata-browser',
  setup(build) {
    build.onResolve({ filter: /^node:crypto$/ }, () => ({ path: path.join(root, 'runtime/browser/nodeCrypto.ts') }));
    build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path.slice(5), namespace: 'node-unavailable' }));
    build.onLoad({ filter: /.*/, namespace: 'node-unavailable' }, (args) => {
      const names = NODE_EXPORTS[args.path];
      if (!names) return { errors: [{ text: `node:${args.path} has no browser stand-in (add it to NODE_EXPORTS in scripts/build.mjs)` }] };
      const shim = JSON.stringify(path.join(root, 'runtime/browser/nodeUnavailable.ts'));
      return {
        contents: [`import { unavailableModule } from ${shim};`, `const m = unavailableModule('node:${args.path}');`, 'export default m;', ...names.map((n) => `export const ${n} = m.${n};`)].join('\n'),
        resolveDir: root,
        loader: 'js',
      };
    });
    build.onResolve({ filter: /\/defaultSource\.ts$/ }, (args) => ({ path: path.join(args.resolveDir, args.path.replace(/\.ts$/, '.browser.ts')) }));
    // loaded by a variable specifier at run time in Node only (runtime/device.ts)
    build.onResolve({ filter: /^webgpu$/ }, () => ({ path: 'webgpu', external: true }));
  },
};

const common = { bundle: true, format: 'esm', target: 'es2022', sourcemap: true, logLevel: 'warning', absWorkingDir: root };

/** The browser bundle alone, into `outdir` (tests build their own copy). */
export async function buildBrowser(outdir) {
  await esbuild.build({ ...common, entryPoints: { browser: 'browser.ts' }, outdir, platform: 'browser', plugins: [browserPlugin] });
}

export async function build({ types = true } = {}) {
  // only what this build writes: dist/bench.mjs (bench/device/prepare.sh) stays
  for (const entry of ['index', 'browser', 'cli']) for (const ext of ['.js', '.js.map']) rmSync(path.join(out, entry + ext), { force: true });
  rmSync(path.join(out, 'types'), { recursive: true, force: true });
  await Promise.all([
    esbuild.build({ ...common, entryPoints: { index: 'index.ts', cli: 'cli/main.ts' }, outdir: out, platform: 'node', packages: 'external' }),
    buildBrowser(out),
  ]);
  if (types) {
    execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
    // tsc keeps the sources' `.ts` specifiers in declarations; the emitted files are `.d.ts` beside `.js` names
    for (const file of readdirSync(path.join(out, 'types'), { recursive: true })) {
      if (!file.endsWith('.d.ts')) continue;
      const full = path.join(out, 'types', file);
      writeFileSync(full, readFileSync(full, 'utf8').replace(/(from\s+|import\()(['"])(\.{1,2}\/[^'"]*?)\.ts\2/g, '$1$2$3.js$2'));
    }
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await build({ types: !process.argv.includes('--no-types') });
}
