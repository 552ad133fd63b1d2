// Compiles every program a session of a model runs, ahead of time, into an AotModel (compiler/aotModule.ts) for
// `strata compile` to write out. The session is loaded once against portable limits, recording what it compiles.
import type { ModelSource } from '../base/modelSource.ts';
import { AOT_FORMAT, type AotModel, PORTABLE_LIMITS } from '../compiler/aotModule.ts';
import type { DeviceLimits } from '../compiler/compile.ts';
import type { Program } from '../compiler/program.ts';
import { type SessionOptions, Session } from './session.ts';

export interface CompileModelOptions extends Pick<SessionOptions, 'device' | 'slots' | 'capacity' | 'prefillChunks' | 'decodeRows' | 'stepsPerSubmit' | 'onProgress'> {
  /** Default PORTABLE_LIMITS (WebGPU's defaults: runs on any adapter). */
  limits?: DeviceLimits;
}

export async function compileModel(location: string | ModelSource, options: CompileModelOptions = {}): Promise<AotModel> {
  const limits = options.limits ?? PORTABLE_LIMITS;
  const programs: Record<string, Program> = {};
  const session = await Session.load(location, { ...options, warmUp: false, compileLimits: limits, onCompiled: (key, program) => (programs[key] = program) });
  try {
    return {
      format: AOT_FORMAT,
      family: session.model.family,
      modelFingerprint: session.runner.caches.model!.fingerprint,
      session: {
        slots: session.slots,
        capacity: session.capacity,
        prefillChunks: [...session.runner.options.chunks],
        decodeRows: [...session.generator.decodeRows],
        stepsPerSubmit: session.generator.K,
      },
      limits,
      memory: session.model.memory(),
      programs,
    };
  } finally {
    await session.close();
  }
}
