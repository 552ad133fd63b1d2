// The skeleton most families share: the token embedding (scaled where the family says), N residual blocks, a
// final norm and the LM head (the embedding itself under tie_word_embeddings), as one ModelDef. A family writes its
// block and names what differs; the traced graph is op for op what the hand-written loop gave.
import type { MemorySpec } from '../caches/spec.ts';
import type { StepContext } from '../caches/stepContext.ts';
import { gatedMlp, linear, rmsnorm } from '../dsl/nn/basic.ts';
import type { Tensor } from '../dsl/tensor.ts';
import type { BaseModelConfig } from './configs/common.ts';
import type { ModelDef } from './model.ts';

/** One layer as its block sees it. */
export interface StackLayer {
  ctx: StepContext;
  index: number;
  /** Checkpoint prefix of the layer's tensors, e.g. `model.layers.3.`. */
  prefix: string;
  /** The layer's tensor `${prefix}${name}`. */
  weight(name: string, shape: number[]): Tensor;
  /** The stack's norm of x [..., hidden] with the layer's `${prefix}${name}.weight`. */
  norm(x: Tensor, name: string): Tensor;
}

/** Checkpoint names of the skeleton; HF's `model.*` unless the family says otherwise (Mamba's `backbone.*`). */
export interface StackNames {
  embeddings: string;
  /** Prefix of layer l's tensors is `${layers}${l}.`. */
  layers: string;
  finalNorm: string;
}

const HF_NAMES: StackNames = { embeddings: 'model.embed_tokens.weight', layers: 'model.layers.', finalNorm: 'model.norm.weight' };
/** The names of Mamba-1/Mamba-2 checkpoints (MambaForCausalLM, Mamba2ForCausalLM). */
export const BACKBONE_NAMES: StackNames = { embeddings: 'backbone.embeddings.weight', layers: 'backbone.layers.', finalNorm: 'backbone.norm_f.weight' };

export interface DecoderStackSpec<Step> {
  config: BaseModelConfig<string>;
  names?: Partial<StackNames>;
  memory(): MemorySpec;
  constants?: Record<string, Float32Array>;
  /** The embedding is multiplied by this (muP); absent: no multiplication. */
  embeddingMultiplier?: number;
  /** The norm of the blocks and of the final norm; default RMSNorm with the config's normEps. */
  norm?(x: Tensor, weight: Tensor): Tensor;
  /** Per-step values every block reads (RoPE frequencies, multiplier vectors), made once before the embedding. */
  prepare?(ctx: StepContext): Step;
  /** Layer `layer.index`'s update of the residual stream h [S,T,hidden]: returns the new h. */
  block(layer: StackLayer, h: Tensor, step: Step): Tensor;
  /** What the head's logits go through (muP scaling); absent: nothing. */
  scaleLogits?(logits: Tensor): Tensor;
}

/** The LM head on hidden states [..., hidden]: lm_head.weight, or the embedding when tied. */
export function lmHead(ctx: StepContext, config: BaseModelConfig<string>, hidden: Tensor, embeddings = HF_NAMES.embeddings): Tensor {
  return linear(hidden, ctx.weight(config.tieWordEmbeddings ? embeddings : 'lm_head.weight', [config.vocabSize, config.hiddenSize]));
}

export function decoderStack<Step = undefined>(spec: DecoderStackSpec<Step>): ModelDef {
  const { config } = spec;
  const { vocabSize: V, hiddenSize: Hd } = config;
  const names = { ...HF_NAMES, ...spec.names };
  const norm = spec.norm ?? ((x: Tensor, weight: Tensor) => rmsnorm(x, weight, config.normEps));
  const constants = spec.constants ?? {};
  return {
    family: config.modelType,
    vocabSize: V,
    hiddenSize: Hd,
    eosTokenIds: config.eosTokenIds,
    memory: spec.memory,
    constants: () => constants,
    forward(ctx: StepContext): Tensor {
      const step = spec.prepare?.(ctx) as Step;
      let h = ctx.weight(names.embeddings, [V, Hd]).gather(ctx.tokens); // [S,T,Hd]
      if (spec.embeddingMultiplier !== undefined) h = h.mul(spec.embeddingMultiplier);
      for (let index = 0; index < config.numLayers; index++) {
        const prefix = `${names.layers}${index}.`;
        const weight = (name: string, shape: number[]) => ctx.weight(prefix + name, shape);
        h = spec.block({ ctx, index, prefix, weight, norm: (x, name) => norm(x, weight(`${name}.weight`, [Hd])) }, h, step);
      }
      return norm(h, ctx.weight(names.finalNorm, [Hd]));
    },
    logits(ctx, hidden) {
      const logits = lmHead(ctx, config, hidden, names.embeddings);
      return spec.scaleLogits ? spec.scaleLogits(logits) : logits;
    },
  };
}

/** The SwiGLU-style MLP under HF's `${prefix}{gate,up,down}_proj.weight` names, on x [..., hidden]. */
export function checkpointGatedMlp(ctx: StepContext, prefix: string, x: Tensor, hidden: number, intermediate: number, activation: string): Tensor {
  const w = (name: string, shape: number[]) => ctx.weight(prefix + name, shape);
  return gatedMlp(x, w('gate_proj.weight', [intermediate, hidden]), w('up_proj.weight', [intermediate, hidden]), w('down_proj.weight', [hidden, intermediate]), activation);
}
