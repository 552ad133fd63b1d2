#!/usr/bin/env node
// Entry point of the `strata` command: lets Node load the TypeScript sources through tsx, then runs the CLI.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
await main(process.argv);
