// `strata bench`: throughput, dispatches, syncs and roofline figures on the adapter at hand (see bench/).
import type { Command } from 'commander';
import { runBench } from '../bench/main.ts';

export function register(program: Command): void {
  program
    .command('bench')
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
