// `strata doctor`: shows the WebGPU adapter Strata would run on, or why there is none.
import type { Command } from 'commander';
import { acquireDevice, describeDevice } from '../runtime/device.ts';

export function register(program: Command): void {
  program
    .command('doctor')
    .description('Show the WebGPU adapter, backend, features and limits Strata would use (exit 1 if there is none)')
    .option('--json', 'print adapter info, features and all limits as JSON')
    .action(async (options: { json?: boolean }) => {
      // NoAdapterError propagates: main prints its message (cause and fix) and exits 1.
      const strataDevice = await acquireDevice();
      if (options.json) {
        const { adapterInfo, isFallback, features, limits } = strataDevice;
        console.log(JSON.stringify({ adapterInfo, isFallback, features, limits }, null, 2));
      } else {
        console.log(describeDevice(strataDevice));
      }
      strataDevice.device.destroy();
    });
}
