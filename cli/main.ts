// The `strata` command line: builds the commander program from one module per command and runs it.
// To add a command, write `cli/<name>.ts` exporting `register(program: Command)` and list it in COMMANDS.
import { Command, CommanderError } from 'commander';
import { isUserError, oneLine } from '../base/errors.ts';
import * as doctor from './doctor.ts';
import * as generate from './generate.ts';
import * as inspect from './inspect.ts';
import * as parity from './parity.ts';
import * as bench from './bench.ts';
import * as serve from './serve.ts';
import * as serveDemo from './serveDemo.ts';
import * as compileModule from './compileModule.ts';

export interface CommandModule {
  register(program: Command): void;
}

const COMMANDS: CommandModule[] = [doctor, generate, inspect, parity, bench, serve, serveDemo, compileModule];

export function buildProgram(): Command {
  const program = new Command('strata')
    .description('Compile hybrid language models to WGSL and run them on WebGPU')
    .option('--verbose', "also show the WebGPU adapter's own notes (Dawn's limit warnings) on stderr")
    .showHelpAfterError()
    .exitOverride();
  for (const command of COMMANDS) command.register(program);
  return program;
}

/** Runs the CLI and exits the process: Dawn can keep the event loop alive after the work is done. */
export async function main(argv: string[]): Promise<never> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    process.exitCode = exitCodeFor(error);
  }
  process.exit(process.exitCode ?? 0);
}

function exitCodeFor(error: unknown): number {
  // commander has already printed its own usage errors, help and version.
  if (error instanceof CommanderError) return error.exitCode;
  // errors about the user's input carry a message that says what was expected: one line, no stack trace
  if (isUserError(error)) {
    console.error(`strata: ${oneLine(error.message)}`);
    return 1;
  }
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  return 1;
}
