// `strata doctor`: shows the WebGPU adapter Strata would run on, or why there is none, and the notes Dawn prints
// about it (kept out of the other commands' output).
import type { Command } from 'commander';
import { acquireDevice, adapterDiagnostics, describeDevice } from '../runtime/device.ts';

export function register(program: Command): void {
  program
    .command('doctor')
    .description('Show the WebGPU adapter, backend, features and limits Strata would use (exit 1 if there is none)')
    .option('--json', 'print adapter info, features and all limits as JSON')
    .action(async (options: { json?: boolean }) => {
      // NoAdapterError propagates: main prints its message (cause and fix) and exits 1.
      const strataDevice = await acquireDevice();
      const diagnostics = await adapterDiagnostics();
      if (options.json) {
        const { adapterInfo, isFallback, features, limits, subgroupMatrix } = strataDevice;
        console.log(JSON.stringify({ adapterInfo, isFallback, features, limits, subgroupMatrix, diagnostics }, null, 2));
      } else {
        console.log(describeDevice(strataDevice));
        console.log(diagnostics.length === 0 ? 'adapter notes (none)' : ['adapter notes (from Dawn)', ...diagnostics.map((line) => `  ${line}`)].join('\n'));
      }
      strataDevice.device.destroy();
    });
}
