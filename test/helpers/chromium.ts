// Debian's Chromium driven by playwright-core (no browser download), headless with WebGPU on its software adapter
// (SwiftShader). The network flags keep Chromium from calling out: on a closed network those connections fail.
import * as fs from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

export const CHROMIUM = process.env.STRATA_CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--enable-unsafe-webgpu', // WebGPU on Linux, where it is not yet on by default; SwiftShader is the adapter without a GPU
  '--no-sandbox', // tests run as root in CI
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchChromium(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: run \`npm run setup\` (installs Debian's chromium as root) or set STRATA_CHROMIUM`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}
