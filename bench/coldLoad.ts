// Where a cold Session.load spends its time on a driver that compiles shaders at first dispatch (lavapipe):
// loads the model without warm-up, then runs every kernel of every program alone, twice, with every row inactive;
// the first run's excess over the second is that kernel's compile. Prints per program, per template and the
// slowest kernels. Run it cold: MESA_SHADER_CACHE_DISABLE=true npx tsx bench/coldLoad.ts [model-dir] [--slots N]
// [--only KEY-PART] [--decode N] [--dump DIR [--dump-only]]
// (a measurement script, not a test; note `uptime`: other work on the machine's cores inflates every figure).
import { execSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { printSchedule } from '../compiler/program.ts';
import { Session, warmUpKeys } from '../runtime/session.ts';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const slots = Number(flag('--slots') ?? 1);
const dumpOnly = args.includes('--dump-only') && args.splice(args.indexOf('--dump-only'), 1).length > 0;
const only = flag('--only'); // programs whose key contains this (e.g. 'decode rows=1 greedy')
const dump = flag('--dump'); // a folder: each program's schedule and WGSL are written there
const decodeTokens = Number(flag('--decode') ?? 0); // then decode this many tokens (twice): speed and CPU time
const dir = args[0] ?? 'assets/models/tiny-granite-code';
const ms = (t: number) => `${t.toFixed(0).padStart(7)} ms`;
let commit = '?';
try {
  commit = execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
} catch {}
console.log(`cold-load breakdown of ${dir} (slots ${slots}), commit ${commit}, ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}, MESA_SHADER_CACHE_DISABLE=${process.env.MESA_SHADER_CACHE_DISABLE ?? ''}`);

const t0 = performance.now();
const session = await Session.load(dir, { slots, warmUp: false });
const loaded = performance.now() - t0;
const device = session.runner.runtime.device;
console.log(`load without warm-up (trace, compile, create pipelines, upload weights): ${ms(loaded)}; ${session.counters.pipelines} pipelines; limits ${JSON.stringify(session.runner.runtime.limits)}`);

interface Row {
  program: string;
  kernel: string;
  templates: string;
  wgslBytes: number;
  first: number;
  second: number;
  /** process CPU time (all threads) of the first run over the second's: the compile, less sensitive to other load */
  cpu: number;
}
const rows: Row[] = [];
const seen = new Set<string>();
// the programs a default load warms first (for the README's first prompt), then the ones compiled at first use
const generator = session.generator;
const plan = warmUpKeys('first', session.runner.options.chunks, generator.decodeRows[0]!, session.encode('def fibonacci(n):'));
const warmed = Array.isArray(plan) ? plan : [];
const programs = [...generator.programs()].sort((a, b) => Number(!warmed.includes(a.key)) - Number(!warmed.includes(b.key)));
for (const p of programs) {
  if (only && !p.key.includes(only)) continue;
  if (dump) {
    mkdirSync(dump, { recursive: true });
    const program = p.exe.program;
    writeFileSync(`${dump}/${p.key.replace(/[ =]/g, '_')}.txt`, [printSchedule(program), ...program.kernels.map((k) => `// ---- ${k.name}\n${k.wgsl}`)].join('\n'));
  }
  if (dumpOnly) continue;
  p.idle();
  const start = performance.now();
  for (const [i, k] of p.exe.program.kernels.entries()) {
    const timed = async () => {
      const s = performance.now();
      const c = process.cpuUsage();
      p.exe.runKernel(i);
      await device.queue.onSubmittedWorkDone();
      const { user, system } = process.cpuUsage(c);
      return { wall: performance.now() - s, cpu: (user + system) / 1000 };
    };
    const first = await timed();
    const second = await timed();
    // a pipeline shared with an earlier program (same WGSL) was compiled there
    if (!seen.has(k.wgsl)) rows.push({ program: p.key, kernel: k.name, templates: k.templates.join('+'), wgslBytes: k.wgsl.length, first: first.wall, second: second.wall, cpu: first.cpu - second.cpu });
    seen.add(k.wgsl);
  }
  const total = performance.now() - start;
  const mine = rows.filter((r) => r.program === p.key);
  const compile = mine.reduce((a, r) => a + Math.max(0, r.first - r.second), 0);
  const cpu = mine.reduce((a, r) => a + Math.max(0, r.cpu), 0);
  console.log(`${warmed.includes(p.key) ? 'warmed ' : 'on use '} ${p.key.padEnd(22)} ${String(p.exe.program.kernels.length).padStart(4)} kernels, ${String(mine.length).padStart(4)} new pipelines: compile ${ms(compile)} wall, ${ms(cpu)} CPU (all its runs ${ms(total)})`);
}

const byTemplate = new Map<string, { n: number; compile: number; cpu: number; bytes: number }>();
for (const r of rows) {
  const t = byTemplate.get(r.templates) ?? { n: 0, compile: 0, cpu: 0, bytes: 0 };
  t.n++;
  t.compile += Math.max(0, r.first - r.second);
  t.cpu += Math.max(0, r.cpu);
  t.bytes += r.wgslBytes;
  byTemplate.set(r.templates, t);
}
const warmCpu = rows.filter((r) => warmed.includes(r.program)).reduce((a, r) => a + Math.max(0, r.cpu), 0);
const warmWall = rows.filter((r) => warmed.includes(r.program)).reduce((a, r) => a + Math.max(0, r.first - r.second), 0);
console.log(`warmed at a default load (${warmed.join(', ')}): ${ms(warmWall)} wall, ${ms(warmCpu)} CPU`);
const total = rows.reduce((a, r) => a + Math.max(0, r.first - r.second), 0);
const totalCpu = rows.reduce((a, r) => a + Math.max(0, r.cpu), 0);
console.log(`\nfirst-dispatch compile, all programs: ${ms(total)} wall, ${ms(totalCpu)} CPU over ${rows.length} pipelines; load now ${loadavg()[0]!.toFixed(2)}`);
console.log('per template (pipelines, compile wall, CPU, WGSL KiB):');
for (const [t, v] of [...byTemplate].sort((a, b) => b[1].cpu - a[1].cpu))
  console.log(`  ${t.padEnd(34)} ${String(v.n).padStart(4)}  ${ms(v.compile)}  ${ms(v.cpu)}  ${(v.bytes / 1024).toFixed(1).padStart(7)}`);
console.log('slowest kernels by CPU (program, kernel, template, WGSL KiB, compile wall, CPU):');
for (const r of [...rows].sort((a, b) => b.cpu - a.cpu).slice(0, 15))
  console.log(`  ${r.program.padEnd(22)} ${r.kernel.slice(0, 40).padEnd(40)} ${r.templates.padEnd(24)} ${(r.wgslBytes / 1024).toFixed(1).padStart(6)}  ${ms(r.first - r.second)}  ${ms(r.cpu)}`);
for (let i = 0; decodeTokens > 0 && i < 2; i++) {
  const c = process.cpuUsage();
  const r = await session.generate('def fibonacci(n):', { maxNewTokens: decodeTokens, stopTokenIds: [] }).result();
  const { user, system } = process.cpuUsage(c);
  const s = r.stats;
  console.log(`decode ${s.generatedTokens} tokens: ${s.decodeTokensPerSecond.toFixed(1)} tok/s wall, ${((user + system) / 1000 / s.generatedTokens).toFixed(1)} ms CPU per token (prefill included); first runs: ${s.firstRuns.join(', ') || 'none'}; load ${loadavg()[0]!.toFixed(2)}`);
}
await session.close();
process.exit(0); // Dawn can keep the event loop alive
