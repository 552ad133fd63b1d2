// Tracing and compiling in one call (tests and examples): the DSL may use the compiler, never the reverse.
import { type CompileOptions, compile } from '../compiler/compile.ts';
import type { Program } from '../compiler/program.ts';
import type { Tensor } from './tensor.ts';
import { type Dims, trace } from './trace.ts';

/** Traces `fn` over the bucket `dims` and compiles the graph. */
export function compileFn(fn: () => Record<string, Tensor> | void, dims: Dims = {}, options: CompileOptions = {}): Program {
  return compile(trace(fn, dims), { bucket: dims, ...options });
}
