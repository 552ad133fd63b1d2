// The nn building blocks in one namespace (`import { nn } from 'strata'`): compositions of DSL primitives.
export * from './basic.ts';
export * from './attention.ts';
export * from './conv.ts';
export * from './deltaRule.ts';
export * from './mamba.ts';
export * from './mamba2.ts';
export * from './moe.ts';
export * from './sampling.ts';
