#!/usr/bin/env node
// Entry point of the `strata` command: runs the CLI (TypeScript sources loaded through tsx) in a child process
// and passes its stderr through a filter.
//
// Why a child: dawn.node writes notes about the adapter's limits ("Warning: maxDynamicUniformBuffersPerPipeline-
// Layout artificially reduced from 1000000 to 16 ...") from native code straight to file descriptor 2 while
// requestAdapter runs. No Dawn toggle or API silences them, and a Node process cannot redirect its own fd 2, so
// the process that owns the terminal drops those lines (and only those) from the child's stderr. `--verbose`
// keeps them; `strata doctor` lists them.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const CHILD = 'STRATA_CLI_CHILD';

if (process.env[CHILD] === '1') {
  // A checkout runs the TypeScript sources (through tsx); an installed package runs its built dist/cli.js.
  let main;
  if (existsSync(fileURLToPath(new URL('../cli/main.ts', import.meta.url)))) {
    const { register } = await import('tsx/esm/api');
    register();
    ({ main } = await import('../cli/main.ts'));
  } else {
    ({ main } = await import('../dist/cli.js'));
  }
  await main(process.argv);
} else {
  const verbose = process.argv.slice(2).includes('--verbose');
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'pipe'],
    env: { ...process.env, [CHILD]: '1', STRATA_STDERR_IS_TTY: process.stderr.isTTY ? '1' : '0' },
  });
  const write = (text) => text && process.stderr.write(text);
  const filter = verbose ? { push: write, end() {} } : dawnNoteFilter(write);
  child.on('error', (error) => {
    process.stderr.write(`strata: cannot start the CLI process: ${error.message}\n`);
    process.exit(1);
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => filter.push(text));
  // A terminal's Ctrl-C reaches both processes; a signal sent to this one alone is passed on.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('close', (code, signal) => {
    filter.end();
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    }
    process.exit(code ?? 1);
  });
}

/**
 * Drops Dawn's adapter-limit notes from a stream of text, passing everything else on as it comes (a line is held
 * back only while it could still become such a note, so progress lines rewritten with \r stay live).
 */
function dawnNoteFilter(write) {
  const NOTE = /^Warning: \w+ artificially reduced from \d+ to \d+/;
  const PREFIX = 'Warning: ';
  let held = '';
  let midLine = false;
  return {
    push(text) {
      while (text.length > 0) {
        const newline = text.indexOf('\n');
        if (midLine) {
          if (newline < 0) return write(text);
          write(text.slice(0, newline + 1));
          midLine = false;
        } else if (newline >= 0) {
          const line = held + text.slice(0, newline);
          held = '';
          if (!NOTE.test(line)) write(`${line}\n`);
        } else {
          held += text;
          const couldBeNote = held.startsWith(PREFIX) || PREFIX.startsWith(held);
          if (!couldBeNote) {
            write(held);
            held = '';
            midLine = true;
          }
          return;
        }
        text = text.slice(newline + 1);
      }
    },
    end() {
      if (!NOTE.test(held)) write(held);
      held = '';
    },
  };
}
