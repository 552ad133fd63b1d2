// Does this Dawn take subgroupMatrixLoad/Store with the majorness as a template argument (the form that replaces
// the deprecated bool argument)? Prints the compilation messages of one shader in each form.
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const adapter = await create(['enable-dawn-features=vulkan_enable_f16_on_nvidia,allow_unsafe_apis,use_vulkan_memory_model']).requestAdapter();
const device = await adapter.requestDevice({ requiredFeatures: ['chromium-experimental-subgroup-matrix', 'shader-f16'] });
const body = (load, store) => `enable f16;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
var<workgroup> t: array<f16, 512>;
@compute @workgroup_size(32) fn main() {
  let l = ${load('subgroup_matrix_left<f16, 16, 16>', 'row_major', 'false')};
  let r = ${load('subgroup_matrix_right<f16, 16, 16>', 'col_major', 'true')};
  let acc = subgroupMatrixMultiplyAccumulate(l, r, subgroup_matrix_result<f32, 16, 16>());
  ${store}
}`;
const forms = {
  old: body((T, _m, b) => `subgroupMatrixLoad<${T}>(&t, 0u, ${b}, 16u)`, 'subgroupMatrixStore(&out, 0u, acc, false, 16u);'),
  template: body((T, m) => `subgroupMatrixLoad<${T}, ${m}>(&t, 0u, 16u)`, 'subgroupMatrixStore<row_major>(&out, 0u, acc, 16u);'),
};
for (const [name, code] of Object.entries(forms)) {
  const info = await device.createShaderModule({ code }).getCompilationInfo();
  console.log(`form ${name}: ${info.messages.length ? info.messages.map((m) => `${m.type} ${m.message}`).join(' | ') : 'no messages'}`);
}
