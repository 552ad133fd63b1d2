// Compiled pipelines shared by every GpuRuntime on one device, keyed by WGSL text. A driver makes a new pipeline
// object compile again even for a text it has seen (lavapipe compiles at the first dispatch, 0.1-3 s a kernel), so
// a second session of a model, or a kernel that recurs across models, reuses the first one's pipeline.

/** Distinct pipelines kept per device; the least recently used go first (an executable keeps its own). */
export const PIPELINE_CACHE_ENTRIES = 4096;

const byDevice = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/**
 * The device's pipeline for `wgsl`, made by `create` when no runtime on the device has one (concurrent requests
 * share one creation). A failed creation is not kept, so its error repeats rather than being cached.
 */
export function sharedPipeline(device: GPUDevice, wgsl: string, create: () => Promise<GPUComputePipeline>): Promise<GPUComputePipeline> {
  let cache = byDevice.get(device);
  if (!cache) byDevice.set(device, (cache = new Map()));
  const hit = cache.get(wgsl);
  if (hit) {
    cache.delete(wgsl); // re-inserted: a Map iterates in insertion order, so the first key is the least recent
    cache.set(wgsl, hit);
    return hit;
  }
  const made = create();
  cache.set(wgsl, made);
  made.catch(() => {
    if (cache.get(wgsl) === made) cache.delete(wgsl);
  });
  for (const key of cache.keys()) {
    if (cache.size <= PIPELINE_CACHE_ENTRIES) break;
    cache.delete(key);
  }
  return made;
}
