// A switch read from the environment at device creation (runtime/device.ts), set for the tests of one file: the
// file's device is created after beforeAll, and the value the process had comes back after the file.
import { afterAll, beforeAll } from 'vitest';

export function useEnv(name: string, value: string): void {
  const saved = process.env[name];
  beforeAll(() => {
    process.env[name] = value;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  });
}
