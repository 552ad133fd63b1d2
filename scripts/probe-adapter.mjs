// Asks Dawn (the `webgpu` package) for an adapter and prints its info as JSON; exit 0 if found, 1 if not.
// Used by setup-webgpu.sh. process.exit is deliberate: Dawn's instance can keep the event loop alive.
const timeoutMs = Number(process.env.STRATA_PROBE_TIMEOUT_MS ?? 60_000);
const timer = setTimeout(() => {
  console.error(`probe: requestAdapter() did not settle within ${timeoutMs} ms`);
  process.exit(1);
}, timeoutMs);

try {
  const { create } = await import('webgpu');
  const gpu = create([]);
  const adapter = await gpu.requestAdapter();
  if (!adapter) {
    console.error('probe: Dawn found no WebGPU adapter');
    process.exit(1);
  }
  const info = adapter.info ?? {};
  const { vendor, architecture, device, description } = info;
  console.log(JSON.stringify({ vendor, architecture, device, description, isFallbackAdapter: info.isFallbackAdapter ?? adapter.isFallbackAdapter }));
  clearTimeout(timer);
  process.exit(0);
} catch (error) {
  console.error(`probe: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
