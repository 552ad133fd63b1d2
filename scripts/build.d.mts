// Types of scripts/build.mjs for the TypeScript that imports it (cli/serveDemo.ts, tests).
export function buildBrowser(outdir: string): Promise<void>;
export function build(options?: { types?: boolean }): Promise<void>;
