// The user-error brand the CLI prints without a stack, the bounded message helpers, and WebGPU validation errors
// caught in error scopes (on the real adapter) as typed errors.
import { describe, expect, it } from 'vitest';
import { MemoryError } from '../../caches/hybridMemory.ts';
import { RestoreError } from '../../caches/sessionFile.ts';
import { CompileError } from '../../compiler/compile.ts';
import { ShapeError } from '../../compiler/ops.ts';
import { ConfigError } from '../../models/config.ts';
import { GpuValidationError, NoAdapterError, getSharedDevice, takeUncapturedErrors, withGpuErrorScope } from '../../runtime/device.ts';
import { describeJson, elide, isUserError, oneLine } from '../../base/errors.ts';
import { UnknownSequenceError } from '../../runtime/generator.ts';
import { ContextOverflowError, WeightError } from '../../runtime/modelRunner.ts';
import { SafetensorsError } from '../../base/safetensors.ts';
import { ModelNotFoundError, PromptError, SessionOptionsError } from '../../runtime/session.ts';
import { TokenizerError } from '../../runtime/tokenizer.ts';

describe('user errors', () => {
  it.each([
    ConfigError, SafetensorsError, TokenizerError, RestoreError, ModelNotFoundError, PromptError, SessionOptionsError,
    NoAdapterError, GpuValidationError, WeightError, ContextOverflowError, UnknownSequenceError, ShapeError, MemoryError,
  ] as (new (message: string, ...rest: never[]) => Error)[])('%o is a user error', (ErrorClass) => {
    expect(isUserError(new ErrorClass('x', [] as never))).toBe(true);
  });

  it('bugs are not', () => {
    expect(isUserError(new Error('x'))).toBe(false);
    expect(isUserError(new RangeError('x'))).toBe(false);
    expect(isUserError(new CompileError('x'))).toBe(false);
    expect(isUserError({ message: 'x' })).toBe(false);
  });
});

describe('bounded messages', () => {
  it('elide keeps head and tail of long text', () => {
    const text = `${'a'.repeat(1000)}${'b'.repeat(1000)}`;
    const short = elide(text);
    expect(short.length).toBeLessThan(400);
    expect(short.startsWith('aaa')).toBe(true);
    expect(short.endsWith('bbb')).toBe(true);
    expect(short).toContain('characters elided');
    expect(elide('short')).toBe('short');
  });

  it('describeJson stays short on deep and wide values', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(describeJson(deep)).toBe('[[[…1 items]]]');
    expect(describeJson(Array(3_000_000).fill(7)).length).toBeLessThan(100);
    expect(describeJson({ ['k'.repeat(1e6)]: 'v'.repeat(1e6) }).length).toBeLessThanOrEqual(300);
  });

  it('oneLine joins lines', () => {
    expect(oneLine('a\n  b\nc')).toBe('a; b; c');
  });
});

describe('WebGPU errors in an error scope', () => {
  it('a buffer over maxBufferSize becomes a GpuValidationError, not an uncaptured error', async () => {
    const strataDevice = await getSharedDevice();
    takeUncapturedErrors(strataDevice);
    const size = strataDevice.limits.maxBufferSize! + 4;
    const error = await withGpuErrorScope(strataDevice, 'a test buffer', async () => {
      strataDevice.device.createBuffer({ size, usage: GPUBufferUsage.STORAGE });
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(GpuValidationError);
    expect((error as Error).message).toMatch(/^WebGPU refused a test buffer: validation error: .*exceeds the max buffer size limit/s);
    await strataDevice.device.queue.onSubmittedWorkDone();
    expect(takeUncapturedErrors(strataDevice)).toEqual([]);
  });

  it('passes the result through when nothing was refused', async () => {
    const strataDevice = await getSharedDevice();
    expect(await withGpuErrorScope(strataDevice, 'nothing', async () => 42)).toBe(42);
  });

  it("keeps the work's own exception as the cause", async () => {
    const strataDevice = await getSharedDevice();
    const bug = new Error('the work failed');
    await expect(withGpuErrorScope(strataDevice, 'x', async () => { throw bug; })).rejects.toBe(bug);
    const error = await withGpuErrorScope(strataDevice, 'x', async () => {
      strataDevice.device.createBuffer({ size: strataDevice.limits.maxBufferSize! + 4, usage: GPUBufferUsage.STORAGE });
      throw bug;
    }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(GpuValidationError);
    expect((error as Error).cause).toBe(bug);
  });
});
