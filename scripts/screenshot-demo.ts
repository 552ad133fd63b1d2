// Takes docs/browser-demo.png: the demo page (strata serve-demo) in headless Chromium after a generation of the
// bundled tiny model. Run with `npx tsx scripts/screenshot-demo.ts` (needs /usr/bin/chromium; see setup-webgpu.sh).
import * as path from 'node:path';
import { startDemoServer } from '../cli/serveDemo.ts';
import { DEFAULT_MODEL } from '../cli/generate.ts';
import { launchChromium } from '../test/helpers/chromium.ts';

const out = path.resolve(import.meta.dirname, '../docs/browser-demo.png');
const server = await startDemoServer({ model: DEFAULT_MODEL });
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1040, height: 900 } });
  await page.goto(`${server.page}?${new URLSearchParams({ prompt: 'def fibonacci(n):\n', max: '64', run: '1' })}`);
  await page.waitForFunction(() => ['done', 'error'].includes((window as unknown as { strataDemo: { stage: string } }).strataDemo.stage), undefined, { timeout: 0, polling: 500 });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
}
process.exit(0);
