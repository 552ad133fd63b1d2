// Compiles every program a session of a model runs, ahead of time, into an AotModel (compiler/aotModule.ts) for
// `strata compile` to write out: one variant per target, each a session loaded against that target's limits,
// recording what it compiles. Pipelines are made on this machine's device, which checks every kernel.
import type { ModelSource } from '../base/modelSource.ts';
import { StrataUserError } from '../base/errors.ts';
import { AOT_FORMAT, type AotModel, type AotVariant, PORTABLE_LIMITS, limitsShortfall } from '../compiler/aotModule.ts';
import type { Program } from '../compiler/program.ts';
import { compileLimitsOf } from './compileLimits.ts';
import { type AdapterProfile, adapterProfile, getSharedDevice } from './device.ts';
import { type SessionOptions, Session } from './session.ts';

/** What to compile for: WebGPU's defaults ('portable'), this machine's adapter ('device'), or another adapter's profile. */
export type CompileTarget = 'portable' | 'device' | AdapterProfile;

export interface CompileModelOptions extends Pick<SessionOptions, 'device' | 'slots' | 'capacity' | 'prefillChunks' | 'decodeRows' | 'stepsPerSubmit' | 'onProgress'> {
  /** One variant each, most demanding first (the loader runs the first one a device can). Default ['device', 'portable']. */
  targets?: CompileTarget[];
}

/** A target this machine cannot compile for (its kernels would not make pipelines here). */
export class CompileTargetError extends StrataUserError {
  override name = 'CompileTargetError';
}

export async function compileModel(location: string | ModelSource, options: CompileModelOptions = {}): Promise<AotModel> {
  const { targets = ['device', 'portable'], ...sessionOptions } = options;
  const device = options.device ?? (await getSharedDevice());
  const variants: AotVariant[] = [];
  let first: Session | undefined;
  try {
    for (const target of targets) {
      const profile = target === 'device' ? adapterProfile(device) : target === 'portable' ? undefined : target;
      const limits = profile ? compileLimitsOf(profile) : PORTABLE_LIMITS;
      const name = profile?.name ?? 'portable';
      if (variants.some((v) => JSON.stringify(v.limits) === JSON.stringify(limits))) continue; // same kernels
      // pipeline creation needs these of the device here; buffers over its binding size fail when they are made
      const shortfall = limitsShortfall(limits, device.limits, device.features, ['maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize'], device.subgroupMatrix);
      if (shortfall) throw new CompileTargetError(`cannot compile for ${name} on this machine: ${shortfall}; compile on a machine whose adapter has as much`);
      const programs: Record<string, Program> = {};
      const session = await Session.load(location, { ...sessionOptions, device, warmUp: false, compileLimits: limits, onCompiled: (key, program) => (programs[key] = program) });
      if (first) await session.close();
      else first = session;
      variants.push({ target: name, limits, programs });
    }
    if (!first) throw new CompileTargetError('no compile target given: name at least one (portable, device, or an adapter profile)');
    return {
      format: AOT_FORMAT,
      family: first.model.family,
      modelFingerprint: first.runner.caches.model!.fingerprint,
      session: {
        slots: first.slots,
        capacity: first.capacity,
        prefillChunks: [...first.runner.options.chunks],
        decodeRows: [...first.generator.decodeRows],
        stepsPerSubmit: first.generator.K,
      },
      memory: first.model.memory(),
      variants,
    };
  } finally {
    await first?.close();
  }
}
