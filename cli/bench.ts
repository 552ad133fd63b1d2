// `strata bench`: throughput, dispatches, syncs and roofline figures on the adapter at hand (see bench/).
import type { Command } from 'commander';
import { runBench } from '../bench/main.ts';
import { PROFILE_USAGE, profileMain } from '../bench/profile.ts';

export function register(program: Command): void {
  const bench = program.command('bench');
  bench
    .command('profile')
    .description('Per-kernel GPU time, template, grid, bytes and fraction of the copy roofline of one bucket')
    .argument('<model>', 'a model folder (its checkpoint) or a bench configuration (random weights)')
    .argument('[options...]', 'see below')
    .allowUnknownOption()
    .helpOption(false)
    .addHelpText('after', `\n${PROFILE_USAGE}`)
    .action(async (model: string, options: string[]) => {
      await profileMain([model, ...options]);
    });
  bench
    .description('Benchmark kernels and the bench models (random weights); figures, not pass/fail')
    .argument('[what]', 'ops | models | all', 'all')
    .option('--quick', 'a tiny configuration and short runs (software adapters)')
    .option('--json', 'print the report as JSON on stdout')
    .option('--config <names>', 'comma-separated bench configurations (llama-400m, granite4h-350m-like, jamba-small)')
    .option('--out <file>', 'also write the JSON report to a file')
    .action(async (what: string, o: { quick?: boolean; json?: boolean; config?: string; out?: string }) => {
      await runBench({ what: what as 'ops' | 'models' | 'all', quick: !!o.quick, json: !!o.json, ...(o.config ? { configs: o.config.split(',') } : {}), ...(o.out ? { out: o.out } : {}) });
    });
}
