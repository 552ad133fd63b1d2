// Writes bench/configs.json from bench/configs.ts, so the PyTorch script runs exactly the same configurations.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BENCH_CONFIGS } from './configs.ts';

fs.writeFileSync(path.join(import.meta.dirname, 'configs.json'), JSON.stringify(BENCH_CONFIGS, null, 2) + '\n');
