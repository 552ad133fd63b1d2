// The WebGPU device Strata runs on: Dawn (the `webgpu` package) in Node, `navigator.gpu` in browsers.
// Requests the adapter's own limits and the optional features Strata uses, and records uncaptured errors.

import { StrataUserError, elide } from '../base/errors.ts';
import type { SubgroupMatrixConfig } from '../compiler/lower/tiledMatrix.ts';

export interface StrataAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Native API under WebGPU, where known: Dawn does not report it, so in Node it is dawn.node's default for the platform. */
  backend?: string;
}

export interface UncapturedGpuError {
  kind: 'validation' | 'out-of-memory' | 'internal' | 'unknown';
  message: string;
}

export interface StrataDevice {
  device: GPUDevice;
  adapterInfo: StrataAdapterInfo;
  /** Features enabled on the device, sorted. */
  features: string[];
  /** Every numeric limit of the device (equal to the adapter's: they are requested explicitly). */
  limits: Record<string, number>;
  /** WGSL language features of the implementation (`wgslLanguageFeatures`), sorted. */
  wgslFeatures?: string[];
  /** True for a software adapter (lavapipe, SwiftShader, WARP). */
  isFallback?: boolean;
  /** The adapter's f16 x f16 -> f32 subgroup matrix, where it has 'chromium-experimental-subgroup-matrix' and one subgroup size. */
  subgroupMatrix?: SubgroupMatrixConfig;
  /** Errors no error scope caught, oldest first; drain with `takeUncapturedErrors`. */
  uncapturedErrors: UncapturedGpuError[];
}

/** Optional features Strata uses when the adapter has them; none is required. */
export const OPTIONAL_FEATURES = ['timestamp-query', 'subgroups', 'shader-f16', 'chromium-experimental-subgroup-matrix'] as const;

/** The largest f16 x f16 -> f32 config of an adapter that has the feature and a single subgroup size, else undefined. */
export function subgroupMatrixOf(info: GPUAdapterInfo, features: ReadonlySet<string>): SubgroupMatrixConfig | undefined {
  const sizes = info as { subgroupMinSize?: number; subgroupMaxSize?: number; subgroupMatrixConfigs?: Iterable<{ componentType: string; resultComponentType: string; M: number; N: number; K: number }> };
  if (!features.has('chromium-experimental-subgroup-matrix') || !features.has('shader-f16') || !sizes.subgroupMaxSize || sizes.subgroupMinSize !== sizes.subgroupMaxSize) return undefined;
  const configs = [...(sizes.subgroupMatrixConfigs ?? [])].filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M <= 32 && c.N <= 32 && c.K <= 32);
  const best = configs.sort((a, b) => b.M * b.N - a.M * a.N)[0];
  return best ? { m: best.M, n: best.N, k: best.K, size: sizes.subgroupMaxSize } : undefined;
}

/** No WebGPU adapter is available; the message names the cause and the fix. */
export class NoAdapterError extends StrataUserError {
  override name = 'NoAdapterError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

// The part of the `webgpu` package this file uses (its own types say `globals: Object`).
interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

const isBrowser = (): boolean => typeof navigator !== 'undefined' && 'gpu' in navigator;
const isNode = (): boolean => typeof process !== 'undefined' && process.versions?.node !== undefined;

// Kept on globalThis, not in module variables, so that a second evaluation of this module in one process
// (a copy reached through another path, a test runner's module reset) still shares one Dawn instance and device.
interface ProcessCache {
  dawnGpu?: GPU;
  sharedDevice?: Promise<StrataDevice>;
}
const PROCESS_CACHE = Symbol.for('strata.runtime.device');
function processCache(): ProcessCache {
  const holder = globalThis as { [PROCESS_CACHE]?: ProcessCache };
  return (holder[PROCESS_CACHE] ??= {});
}

async function loadDawn(): Promise<GPU> {
  const cache = processCache();
  if (cache.dawnGpu) return cache.dawnGpu;
  // A variable specifier keeps browser bundlers from trying to resolve the native package.
  const specifier = 'webgpu';
  let dawn: DawnModule;
  try {
    dawn = (await import(/* @vite-ignore */ specifier)) as DawnModule;
  } catch (error) {
    throw new NoAdapterError(
      `Could not load Dawn (the \`webgpu\` package): ${errorMessage(error)}. ` +
        'Run `npm install` in the project root; dawn.node ships for linux-x64, linux-arm64, darwin and win32.',
      { cause: error },
    );
  }
  // GPUBufferUsage, GPUMapMode, GPUShaderStage... are globals in browsers; Dawn hands them over instead.
  Object.assign(globalThis, dawn.globals);
  // Dawn rounds timestamp queries to ~65 us steps by default (a timing side-channel guard for the web);
  // per-kernel profiles need the raw values.
  // STRATA_DAWN_TOGGLES (Node, a measurement switch): more Dawn toggles to enable, e.g. disable_robustness (no
  // clamped buffer indices; Strata's kernels index within their bindings, but a bug would read out of bounds)
  // Dawn withholds 'shader-f16' from NVIDIA's Vulkan driver (crbug.com/tint/2164: conformance crashes in f16 tests);
  // vulkan_enable_f16_on_nvidia gives it back, as llama.cpp's WebGPU backend does outside browsers. Only the kernels
  // that ask for f16 arithmetic use it (DeviceLimits.shaderF16: the quantized matvec's 'half' K loop), each checked
  // against the f32 loops by the tests and the sweep. Other adapters ignore the toggle.
  // allow_unsafe_apis: Dawn offers experimental features (chromium-experimental-subgroup-matrix) only with it;
  // use_vulkan_memory_model: Dawn's own subgroup matrix tests run Vulkan with it.
  const matrix = typeof process === 'undefined' || process.env?.STRATA_SUBGROUP_MATRIX !== '0' ? ['allow_unsafe_apis', 'use_vulkan_memory_model'] : [];
  const toggles = ['vulkan_enable_f16_on_nvidia', ...matrix, ...(typeof process === 'undefined' ? [] : (process.env?.STRATA_DAWN_TOGGLES?.split(',').filter(Boolean) ?? []))];
  cache.dawnGpu = dawn.create(['disable-dawn-features=timestamp_quantization', `enable-dawn-features=${toggles.join(',')}`]);
  return cache.dawnGpu;
}

// dawn.node picks one backend per platform and does not report it on the adapter.
function dawnBackend(): string | undefined {
  switch (process.platform) {
    case 'linux':
      return 'vulkan';
    case 'darwin':
      return 'metal';
    case 'win32':
      return 'd3d12';
    default:
      return undefined;
  }
}

function noAdapterMessage(): string {
  if (!isNode()) {
    return (
      'No WebGPU adapter: navigator.gpu is missing or returned no adapter. ' +
      'Enable WebGPU: use a browser that ships it (Chrome/Edge 113+, Safari 26+, Firefox 141+ on Windows), ' +
      'serve the page over https or localhost, and check that the GPU is not blocklisted (chrome://gpu).'
    );
  }
  if (process.platform === 'linux') {
    return (
      'No WebGPU adapter: Dawn (the `webgpu` package) found no usable Vulkan driver ' +
      "(Debian 12's Mesa 22 lavapipe is refused by Dawn; Mesa 25 from bookworm-backports works). " +
      "Fix: run `npm run setup` (installs Mesa's lavapipe as root on Debian/Ubuntu) or install a Vulkan driver."
    );
  }
  return `No WebGPU adapter: Dawn (the \`webgpu\` package) found no ${dawnBackend() ?? 'native'} adapter. Fix: install or update the GPU driver.`;
}

export async function acquireDevice(options: { powerPreference?: GPUPowerPreference } = {}): Promise<StrataDevice> {
  let gpu: GPU;
  if (isBrowser()) gpu = navigator.gpu;
  else if (isNode()) gpu = await loadDawn();
  else throw new NoAdapterError(noAdapterMessage());

  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) throw new NoAdapterError(noAdapterMessage());

  // Defaults are far below what most adapters offer (128 MiB bindings, 8 storage buffers), and the compiler
  // schedules against these numbers, so ask for everything the adapter has.
  const requiredLimits: Record<string, number> = {};
  for (const name in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[name];
    if (typeof value === 'number') requiredLimits[name] = value;
  }
  // the experimental feature's name is not in @webgpu/types
  const requiredFeatures = OPTIONAL_FEATURES.filter((feature) => adapter.features.has(feature)) as GPUFeatureName[];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });

  const uncapturedErrors: UncapturedGpuError[] = [];
  device.addEventListener('uncapturederror', (event) => {
    uncapturedErrors.push(describeGpuError((event as GPUUncapturedErrorEvent).error));
  });

  const limits: Record<string, number> = {};
  for (const name in device.limits) {
    const value = (device.limits as unknown as Record<string, unknown>)[name];
    if (typeof value === 'number') limits[name] = value;
  }

  const info = adapter.info;
  return {
    device,
    adapterInfo: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      backend: isBrowser() ? undefined : dawnBackend(),
    },
    features: [...device.features].sort(),
    limits,
    wgslFeatures: [...(gpu.wgslLanguageFeatures ?? [])].sort(),
    // `info.isFallbackAdapter` is the current spec; `adapter.isFallbackAdapter` the older one.
    isFallback: (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
    ...optional('subgroupMatrix', subgroupMatrixOf(info, device.features)),
    uncapturedErrors,
  };
}

function describeGpuError(error: GPUError): UncapturedGpuError {
  const kind =
    typeof GPUValidationError !== 'undefined' && error instanceof GPUValidationError
      ? 'validation'
      : typeof GPUOutOfMemoryError !== 'undefined' && error instanceof GPUOutOfMemoryError
        ? 'out-of-memory'
        : typeof GPUInternalError !== 'undefined' && error instanceof GPUInternalError
          ? 'internal'
          : 'unknown';
  return { kind, message: error.message };
}

/** WebGPU refused an operation (a buffer too large, a pipeline over the limits, memory exhausted). */
export class GpuValidationError extends StrataUserError {
  override name = 'GpuValidationError';
  constructor(
    message: string,
    readonly errors: UncapturedGpuError[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const SCOPED_FILTERS = ['validation', 'out-of-memory', 'internal'] as const;

/**
 * Runs `work` inside validation, out-of-memory and internal error scopes: what WebGPU reports during it becomes
 * a GpuValidationError naming `what` (dawn.node prints uncaptured errors on stdout, which would break --json).
 * An exception of `work` itself is kept as the cause when a scope also caught something.
 */
export async function withGpuErrorScope<T>(strataDevice: StrataDevice, what: string, work: () => Promise<T>): Promise<T> {
  const { device } = strataDevice;
  for (const filter of SCOPED_FILTERS) device.pushErrorScope(filter);
  let result: { value: T } | undefined;
  let failure: unknown;
  try {
    result = { value: await work() };
  } catch (error) {
    failure = error;
  }
  const caught: UncapturedGpuError[] = [];
  for (let i = 0; i < SCOPED_FILTERS.length; i++) {
    const error = await device.popErrorScope();
    if (error) caught.push(describeGpuError(error));
  }
  if (caught.length > 0) {
    const first = caught[0]!;
    const more = caught.length > 1 ? ` (and ${caught.length - 1} more)` : '';
    throw new GpuValidationError(`WebGPU refused ${what}: ${first.kind} error: ${elide(first.message.trim(), 600)}${more}`, caught, failure === undefined ? undefined : { cause: failure });
  }
  if (result === undefined) throw failure;
  return result.value;
}

/** Returns and clears the errors recorded since the last call. */
export function takeUncapturedErrors(strataDevice: StrataDevice): UncapturedGpuError[] {
  return strataDevice.uncapturedErrors.splice(0);
}

/** One device per process (tests and the CLI reuse it); a lost device or a failed attempt is not cached. */
export function getSharedDevice(): Promise<StrataDevice> {
  const cache = processCache();
  if (!cache.sharedDevice) {
    const pending = acquireDevice();
    cache.sharedDevice = pending;
    const forget = () => {
      if (cache.sharedDevice === pending) cache.sharedDevice = undefined;
    };
    pending.then((acquired) => void acquired.device.lost.then(forget), forget);
  }
  return cache.sharedDevice;
}

const KEY_LIMITS = [
  'maxStorageBuffersPerShaderStage',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupsPerDimension',
] as const;

/**
 * What the compiler needs to know of an adapter to compile for it: its numeric limits, features and whether it is
 * a software one. `strata compile --target profile.json` reads one (written by `strata doctor --profile`, or taken
 * in a page with `adapterProfile(await getSharedDevice())`), so a module can be compiled for a device elsewhere.
 */
export interface AdapterProfile {
  /** A name for messages and the module's header (default: the adapter's vendor and architecture). */
  name?: string;
  limits: Record<string, number>;
  features: string[];
  /** WGSL language features (packed_4x8_integer_dot_product: the quantized matvec's 'dot4'). */
  wgslFeatures?: string[];
  isFallback?: boolean;
  /** StrataDevice.subgroupMatrix: the tiled matmul multiplies with it. */
  subgroupMatrix?: SubgroupMatrixConfig;
}

export function adapterProfile(device: StrataDevice): AdapterProfile {
  const { vendor, architecture, device: name } = device.adapterInfo;
  return {
    name: [vendor, architecture || name].filter(Boolean).join(' ') || 'adapter',
    limits: { ...device.limits },
    features: [...device.features],
    ...(device.wgslFeatures ? { wgslFeatures: [...device.wgslFeatures] } : {}),
    ...(device.isFallback !== undefined ? { isFallback: device.isFallback } : {}),
    ...optional('subgroupMatrix', device.subgroupMatrix),
  };
}

const optional = <K extends string, V>(key: K, value: V | undefined): { [k in K]?: V } => (value === undefined ? {} : ({ [key]: value } as { [k in K]: V }));

export function describeDevice(strataDevice: StrataDevice): string {
  const { adapterInfo, features, limits, isFallback } = strataDevice;
  const lines = [
    `vendor       ${adapterInfo.vendor || '(unknown)'}${adapterInfo.architecture ? ` (${adapterInfo.architecture})` : ''}`,
    `device       ${adapterInfo.device || '(unknown)'}${isFallback ? ' [fallback/software adapter]' : ''}`,
  ];
  if (adapterInfo.description) lines.push(`description  ${adapterInfo.description}`);
  lines.push(`backend      ${adapterInfo.backend ?? '(not reported)'}`);
  const optional = OPTIONAL_FEATURES.map((feature) => `${feature} ${features.includes(feature) ? 'yes' : 'no'}`);
  lines.push(`features     ${optional.join(', ')}`);
  const others = features.filter((feature) => !(OPTIONAL_FEATURES as readonly string[]).includes(feature));
  if (others.length > 0) lines.push(`             also: ${others.join(', ')}`);
  lines.push('limits');
  const width = Math.max(...KEY_LIMITS.map((name) => name.length));
  for (const name of KEY_LIMITS) {
    const value = limits[name];
    lines.push(`  ${name.padEnd(width)}  ${value === undefined ? '(not reported)' : formatLimit(name, value)}`);
  }
  return lines.join('\n');
}

function formatLimit(name: string, value: number): string {
  if (!/Size$/.test(name) || value < 1024) return String(value);
  const units = ['KiB', 'MiB', 'GiB'];
  let scaled = value;
  let unit = 'B';
  for (const next of units) {
    if (scaled < 1024) break;
    scaled /= 1024;
    unit = next;
  }
  const rounded = Number.isInteger(scaled) ? String(scaled) : scaled.toFixed(2);
  return `${value} (${rounded} ${unit})`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The notes Dawn prints while it opens the adapter (e.g. limits it lowers), which the CLI keeps out of normal
 * output. Dawn writes them from native code to the process's stderr, so they are read from a probe in a child
 * process. Node only; [] elsewhere or when the probe cannot run.
 */
export async function adapterDiagnostics(timeoutMs = 60_000): Promise<string[]> {
  if (!isNode() || isBrowser()) return [];
  const { execFile } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const probe = fileURLToPath(new URL('../scripts/probe-adapter.mjs', import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [probe], { timeout: timeoutMs, env: { ...process.env, STRATA_PROBE_TIMEOUT_MS: String(timeoutMs) } }, (_error, _stdout, stderr) => {
      resolve(
        String(stderr)
          .split('\n')
          .map((line) => line.trim())
          .filter((line) => line.length > 0 && !line.startsWith('probe:')),
      );
    });
  });
}
