// On the GPU machine (after `source .device/start.sh`): the adapter's features, WGSL language features and the limits
// Strata asks for, as JSON: which variants the adapter can take (shader-f16 for 'half', packed dot products for 'dot4').
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
const info = adapter.info ?? {};
// the GPU object's own set: Node's `navigator.gpu` global is not the instance create() made, and its set is empty
const wgsl = gpu.wgslLanguageFeatures ?? new Set();
const { maxComputeWorkgroupStorageSize, maxStorageBuffersPerShaderStage, maxStorageBufferBindingSize, maxSubgroupSize, minSubgroupSize } = adapter.limits;
console.log(JSON.stringify({ vendor: info.vendor, device: info.device, description: info.description, features: [...adapter.features].sort(), wgslLanguageFeatures: [...wgsl].sort(), limits: { maxComputeWorkgroupStorageSize, maxStorageBuffersPerShaderStage, maxStorageBufferBindingSize, maxSubgroupSize, minSubgroupSize } }, null, 1));
process.exit(0);
