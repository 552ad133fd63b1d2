// The `strata` package: what `import { ... } from 'strata'` gives (Node; bundlers that honour the `browser`
// condition get browser.ts instead). Importing it runs nothing: no device is opened and no file read until called.

// Generating text
export { Session, Generation, ModelNotFoundError, PromptError, SessionOptionsError, ContextOverflowError, UnknownSequenceError, NoAdapterError } from './runtime/session.ts';
export type { SessionOptions, GenerateOptions, GenerationResult, LoadProgress, Prompt } from './runtime/session.ts';
export { Tokenizer } from './runtime/tokenizer.ts';
export { StrataUserError, isUserError } from './base/errors.ts';

// Where model files come from
export type { ModelSource, SourceFileInfo } from './base/modelSource.ts';
export { SourceReadError, SourceChangedError, readSourceJson } from './base/modelSource.ts';
export { NodeFileSource } from './base/nodeFileSource.ts';
export { FetchSource, type FetchSourceOptions } from './base/fetchSource.ts';
export { FileListSource, DirectoryHandleSource } from './runtime/pickedFileSource.ts';
export { openSafetensors, SafetensorsFile, ShardedSafetensors, SafetensorsError, type TensorSource, type TensorInfo, type TensorData } from './base/safetensors.ts';

// Writing a model: the DSL, nn blocks, ModelDef and its helpers
export { Tensor } from './dsl/tensor.ts';
export { trace, input, weight, state, output, constant, iota, type Dim, type Dims } from './dsl/trace.ts';
export * as nn from './dsl/nn/index.ts';
export type { ModelDef } from './models/model.ts';
export { attentionKv, attentionConstants, attentionLayer } from './models/attention.ts';
export { buildModel, MODELS, type ModelEntry } from './models/registry.ts';
export { BACKBONE_NAMES, checkpointGatedMlp, decoderStack, lmHead, type DecoderStackSpec, type StackLayer, type StackNames } from './models/decoderStack.ts';
export { loadConfig, type ModelConfig } from './models/config.ts';
export type { MemorySpec, LayerMemorySpec, KvSpec, RecurrentStateSpec, MemoryOptions, MemoryReport, KvPolicy, KvPolicySetting } from './caches/spec.ts';
export { memoryReport, withKvPolicies } from './caches/spec.ts';
export { StepContext } from './caches/stepContext.ts';

// Compiling and running below the Session
export { compile, DEFAULT_LIMITS, type CompileOptions, type DeviceLimits } from './compiler/compile.ts';
export { compileFn } from './dsl/compileFn.ts';
export { printProgram, printSchedule, serializeProgram, deserializeProgram, type Program, type KernelSpec, type BufferSpec } from './compiler/program.ts';
export { ModelRunner, type RunnerOptions } from './runtime/modelRunner.ts';
export { GpuRuntime, type Counters } from './runtime/gpuRuntime.ts';
export { getSharedDevice, acquireDevice, describeDevice, adapterProfile, type StrataDevice, type AdapterProfile } from './runtime/device.ts';
export { compileLimitsOf } from './runtime/compileLimits.ts';

// Ahead-of-time model modules (`strata compile`; writing one needs the optional peer dependency ts-morph)
export { AOT_FORMAT, PORTABLE_LIMITS, pickVariant, type AotModel, type AotVariant, type AotSessionShape } from './compiler/aotModule.ts';
export { emitAotModule, MissingDependencyError, type EmitOptions } from './compiler/emitModule.ts';
export { compileModel, CompileTargetError, type CompileTarget, type CompileModelOptions } from './runtime/compileAot.ts';
export { AotModuleError } from './runtime/session.ts';
export { randomCheckpoint } from './runtime/randomWeights.ts';

// Serving: the prefix cache and speculative decoding (the HTTP server, Node only, is `strata serve`)
export { PrefixCache, type PrefixCacheOptions, type PrefixCacheStats } from './runtime/prefixCache.ts';
export { speculativeGenerate, PromptLookupDraft, ModelDraft, verifyProposal, type DraftSource, type SpeculativeOptions, type SpeculativeResult } from './runtime/speculative.ts';

// Session memory without a file system (browser): Blob and OPFS
export { saveMemoryToBlob, restoreMemoryFromBlob, saveMemoryToHandle, restoreMemoryFromHandle, saveMemoryToOpfs, restoreMemoryFromOpfs } from './runtime/memoryBlobs.ts';
export { saveMemory, restoreMemory, encodeMemory, RestoreError } from './caches/sessionFile.ts';
