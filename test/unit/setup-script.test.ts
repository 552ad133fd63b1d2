// scripts/setup-webgpu.sh takes the Debian mirror for the backports line from the system's own apt sources
// (one-line .list entries or deb822 .sources stanzas), so it works behind a local mirror.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

const SCRIPT = path.resolve(import.meta.dirname, '../../scripts/setup-webgpu.sh');
let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-apt-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function mirrorFor(files: Record<string, string>): Promise<string> {
  const root = await fsp.mkdtemp(path.join(tmp, 'root-'));
  await fsp.mkdir(path.join(root, 'sources.list.d'));
  for (const [name, text] of Object.entries(files)) await fsp.writeFile(path.join(root, name), text);
  return execFileSync('bash', [SCRIPT, '--print-debian-mirror'], { env: { ...process.env, STRATA_APT_ROOT: root }, encoding: 'utf8' }).trim();
}

it('reads a one-line sources.list, options and security lines included', async () => {
  const list = 'deb http://security.local/debian-security bookworm-security main\n# deb http://commented.local/debian bookworm main\ndeb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.local/debian bookworm main contrib\n';
  expect(await mirrorFor({ 'sources.list': list })).toBe('http://mirror.local/debian');
});

it('reads deb822 .sources stanzas (Debian 12 default)', async () => {
  const sources = 'Types: deb\nURIs: http://security.local/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://proxy.local:3142/debian\nSuites: bookworm bookworm-updates\nComponents: main\n';
  expect(await mirrorFor({ 'sources.list.d/debian.sources': sources })).toBe('http://proxy.local:3142/debian');
});

it('falls back to deb.debian.org when no bookworm source is configured', async () => {
  expect(await mirrorFor({ 'sources.list.d/other.list': 'deb http://example.local/ubuntu jammy main\n' })).toBe('http://deb.debian.org/debian');
});
