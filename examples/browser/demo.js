// The Strata browser demo: load a Hugging Face model folder (a URL, read with range requests; or a folder the user
// picks), optionally with an ahead-of-time module, then stream a generation and show its figures. Query parameters
// drive it without clicks (the browser tests and the screenshot): ?model=URL&aot=URL&prompt=TEXT&max=N&run=1.
import { DirectoryHandleSource, FetchSource, FileListSource, Session, adapterProfile } from '/strata/browser.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
/** What the tests read: stage, load and generation figures, ids, or the error. */
const state = (window.strataDemo = { stage: 'idle' });
let session;

const kib = (bytes) => (bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`);

function showStats(rows) {
  $('stats').tBodies[0].replaceChildren(
    ...rows.map(([name, value]) => {
      const tr = document.createElement('tr');
      tr.innerHTML = `<td>${name}</td><td>${value}</td>`;
      return tr;
    }),
  );
}

function showMemory(plan) {
  const largest = Math.max(1, ...plan.layers.map((l) => l.kvBytes + l.stateBytes));
  $('memory').tBodies[0].replaceChildren(
    ...plan.layers.map((l) => {
      const shapes = [l.kvShape ? `kv [${l.kvShape.join(', ')}]` : '', ...Object.entries(l.stateShapes).map(([n, s]) => `${n} [${s.join(', ')}]`)].filter(Boolean).join('; ');
      const tr = document.createElement('tr');
      tr.innerHTML =
        `<td>${l.layer}</td><td>${l.kind}${l.window ? ` (window ${l.window})` : ''}${l.sharesKvWith !== null ? ` (KV of ${l.sharesKvWith})` : ''}</td>` +
        `<td>${l.kvBytes ? kib(l.kvBytes) : ''}</td><td>${l.stateBytes ? kib(l.stateBytes) : ''}</td><td>${shapes}</td>` +
        `<td><span class="bar" style="width:${(80 * l.kvBytes) / largest}px"></span><span class="bar state" style="width:${(80 * l.stateBytes) / largest}px"></span></td>`;
      return tr;
    }),
  );
}

async function load(source) {
  $('generate').disabled = true;
  await session?.close();
  session = undefined;
  Object.assign(state, { stage: 'loading', error: undefined, result: undefined, compiledPrograms: 0 });
  const t0 = performance.now();
  try {
    let aot;
    if ($('use-aot').checked) {
      $('status').textContent = `importing ${$('aot-url').value}`;
      aot = (await import(new URL($('aot-url').value, location.href).href)).default;
    }
    session = await Session.load(source, {
      slots: 1,
      capacity: 128,
      prefillChunks: [16],
      decodeRows: [1],
      ...(aot ? { aot } : {}),
      onCompiled: () => state.compiledPrograms++,
      onProgress: (e) => {
        $('progress').value = e.stage === 'compile' && e.total ? e.done / e.total : e.stage === 'ready' ? 1 : $('progress').value;
        $('status').textContent = `${e.stage}${e.total ? ` ${e.done}/${e.total}` : ''}${e.detail ? `: ${e.detail}` : ''}`;
      },
    });
    state.session = session; // for the console (and the browser test's OPFS save/restore)
    state.loadSeconds = (performance.now() - t0) / 1000;
    state.aot = Boolean(aot);
    state.aotTarget = session.aotTarget;
    const adapter = session.runner.runtime.strata.adapterInfo;
    $('status').textContent = `${source.location} loaded in ${state.loadSeconds.toFixed(1)} s${aot ? ` from the AOT module's ${session.aotTarget} variant (no tracing, no compiling)` : ' (traced and compiled)'} on ${adapter.vendor} ${adapter.architecture}`;
    $('profile').textContent = JSON.stringify(adapterProfile(session.runner.runtime.strata), null, 1);
    showMemory(session.memoryPlan());
    $('generate').disabled = false;
    state.stage = 'loaded';
  } catch (error) {
    state.stage = 'error';
    state.error = String(error?.message ?? error);
    $('status').textContent = state.error;
  }
}

async function generate() {
  $('generate').disabled = true;
  state.stage = 'generating';
  const out = $('output');
  const prompt = $('prompt').value;
  out.replaceChildren(Object.assign(document.createElement('span'), { className: 'prompt', textContent: prompt }));
  const t0 = performance.now();
  try {
    const run = session.generate(prompt, { maxNewTokens: Number($('max').value), temperature: Number($('temperature').value) });
    let first;
    for await (const piece of run) {
      first ??= performance.now();
      out.append(piece);
    }
    await run.sequence.finished;
    const r = { promptIds: run.promptIds, ids: run.ids, text: run.text };
    const s = run.stats;
    state.timeToFirstTokenSeconds = s.timeToFirstTokenSeconds;
    state.firstPieceSeconds = ((first ?? performance.now()) - t0) / 1000;
    state.result = { ...r, stats: s };
    showStats([
      ['tokens', `${s.promptTokens} prompt + ${s.generatedTokens} generated`],
      ['prefill', `${s.prefillTokensPerSecond.toFixed(1)} tok/s`],
      ['decode', `${s.decodeTokensPerSecond.toFixed(1)} tok/s`],
      ['time to first token', `${(s.timeToFirstTokenSeconds * 1000).toFixed(0)} ms`],
      ['dispatches per token', s.dispatchesPerToken.toFixed(1)],
      ['readbacks per token', (s.readbacks / Math.max(1, s.generatedTokens)).toFixed(3)],
      ['steps per submit', s.stepsPerSubmit],
      ['load', `${state.loadSeconds.toFixed(1)} s${state.aot ? ' (AOT)' : ''}`],
    ]);
    state.stage = 'done';
  } catch (error) {
    state.stage = 'error';
    state.error = String(error?.message ?? error);
    out.append(`\n[${state.error}]`);
  }
  $('generate').disabled = false;
}

$('load-url').onclick = () => load(new FetchSource(new URL($('url').value, location.href).href.replace(/\/$/, '')));
$('pick').onchange = () => $('pick').files.length && load(new FileListSource($('pick').files));
$('open-dir').onclick = async () => {
  if (!window.showDirectoryPicker) return void ($('status').textContent = 'this browser has no showDirectoryPicker: use "Pick a folder…"');
  load(new DirectoryHandleSource(await window.showDirectoryPicker()));
};
$('generate').onclick = generate;

if (params.has('model')) $('url').value = params.get('model');
if (params.has('aot')) ($('use-aot').checked = true), ($('aot-url').value = params.get('aot'));
if (params.has('prompt')) $('prompt').value = params.get('prompt');
if (params.has('max')) $('max').value = params.get('max');
if (params.get('run') === '1') {
  await load(new FetchSource(new URL($('url').value, location.href).href.replace(/\/$/, '')));
  if (state.stage === 'loaded') await generate();
}
