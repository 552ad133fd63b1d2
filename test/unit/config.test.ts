import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  type ModelConfig,
  expectModelType,
  loadConfig,
  parseConfig,
  parseConfigJson,
  supportedModelTypes,
} from '../../models/config.ts';

const root = path.resolve(import.meta.dirname, '../..');
const fixture = (family: string) => path.join(root, 'test/fixtures/hf', family);

async function fixtureJson(family: string): Promise<Record<string, unknown>> {
  return parseConfigJson(await fsp.readFile(path.join(fixture(family), 'config.json'), 'utf8'));
}

function parseError(json: Record<string, unknown>): string {
  try {
    parseConfig(json);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('every fixture config parses', () => {
  const expectations: Record<string, (config: ModelConfig) => void> = {
    llama: (config) => {
      const llama = expectModelType(config, 'llama');
      expect(llama.attention).toMatchObject({ numHeads: 4, numKeyValueHeads: 2, headDim: 16, scale: 0.25 });
      expect(llama.attention.rope).toMatchObject({ type: 'default', theta: 10000, rotaryDim: 16 });
    },
    mamba: (config) => {
      const mamba = expectModelType(config, 'mamba');
      expect(mamba.mamba).toEqual({ innerSize: 128, stateSize: 16, convKernel: 4, dtRank: 8, convBias: true, projBias: false, dtBcNorms: false });
      expect(mamba.tieWordEmbeddings).toBe(true);
    },
    mamba2: (config) => {
      const mamba2 = expectModelType(config, 'mamba2');
      expect(mamba2.mamba).toMatchObject({ numHeads: 8, headDim: 16, numGroups: 1, innerSize: 128, convDim: 160, chunkSize: 8 });
      expect(mamba2.mamba.timeStepLimit).toEqual([0, Infinity]);
    },
    jamba: (config) => {
      const jamba = expectModelType(config, 'jamba');
      expect(jamba.layerKinds).toEqual(['mamba', 'mamba', 'attention', 'mamba']);
      expect(jamba.ffnKinds).toEqual(['dense', 'moe', 'dense', 'moe']);
      expect(jamba.attention.rope).toBeNull();
      expect(jamba.mamba.dtBcNorms).toBe(true);
    },
    bamba: (config) => {
      const bamba = expectModelType(config, 'bamba');
      expect(bamba.layerKinds).toEqual(['mamba2', 'attention', 'mamba2', 'mamba2']);
      expect(bamba.attention.rope).toMatchObject({ partialRotaryFactor: 0.5, rotaryDim: 8 });
    },
    falcon_h1: (config) => {
      const falcon = expectModelType(config, 'falcon_h1');
      expect(falcon.layerKinds).toEqual(Array(3).fill('attention_mamba2'));
      expect(falcon.mamba).toMatchObject({ innerSize: 128, headDim: 16, gatedNorm: 'none', normBeforeGate: true });
      expect(falcon.multipliers).toEqual({
        embedding: 1.5, lmHead: 0.7, attentionIn: 0.9, attentionOut: 1.1, key: 0.8,
        ssmIn: 1.2, ssmOut: 0.9, ssm: [1.1, 0.9, 1.2, 0.8, 1.05], mlpGate: 1.2, mlpDown: 0.8,
      });
    },
    granitemoehybrid: (config) => {
      const granite = expectModelType(config, 'granitemoehybrid');
      expect(granite.layerKinds).toEqual(['mamba2', 'attention', 'mamba2', 'mamba2']);
      expect(granite.attention.scale).toBe(0.2);
      expect(granite.attention.rope).toBeNull(); // position_embedding_type "nope"
      expect(granite).toMatchObject({ embeddingMultiplier: 2, residualMultiplier: 0.5, logitsScaling: 4, tieWordEmbeddings: true });
      expect(granite.moe).toEqual({ numExperts: 4, numExpertsPerTok: 2 });
    },
    lfm2: (config) => {
      const lfm2 = expectModelType(config, 'lfm2');
      expect(lfm2.layerKinds).toEqual(['short_conv', 'attention', 'short_conv', 'attention']);
      expect(lfm2.ffnSize).toBe(128);
      expect(lfm2.conv).toEqual({ kernel: 3, bias: false });
      expect(lfm2.attention.rope?.theta).toBe(1_000_000);
    },
    qwen3_next: (config) => {
      const qwen = expectModelType(config, 'qwen3_next');
      expect(qwen.layerKinds).toEqual(['gated_deltanet', 'gated_deltanet', 'gated_deltanet', 'attention']);
      expect(qwen.ffnKinds).toEqual(Array(4).fill('moe'));
      expect(qwen.attention.rope).toMatchObject({ partialRotaryFactor: 0.25, rotaryDim: 4 });
      expect(qwen.linearAttention).toEqual({ numKeyHeads: 2, numValueHeads: 4, keyHeadDim: 16, valueHeadDim: 16, convKernel: 4, convDim: 128 });
      expect(qwen.eosTokenIds).toEqual([]);
      expect(qwen.bosTokenId).toBeNull();
    },
    gemma3n_text: (config) => {
      const gemma = expectModelType(config, 'gemma3n_text');
      expect(gemma.layerKinds).toEqual(['sliding_attention', 'sliding_attention', 'attention', 'sliding_attention', 'sliding_attention', 'attention']);
      expect(gemma.attention.rope?.theta).toBe(1_000_000);
      expect(gemma.slidingRope.theta).toBe(10_000);
      expect(gemma.attention.scale).toBe(1);
      expect(gemma.kvSharing.roles).toEqual(['independent', 'independent', 'producer', 'producer', 'consumer', 'consumer']);
      expect(gemma.kvSharing.sourceLayer).toEqual([0, 1, 2, 3, 3, 2]);
      expect(gemma.intermediateSizes).toEqual(Array(6).fill(128));
    },
  };

  it.each(Object.keys(expectations))('%s', async (family) => {
    const config = await loadConfig(fixture(family));
    expect(config.modelType).toBe(family);
    expect(config.vocabSize).toBe(256);
    expect(config.hiddenSize).toBe(64);
    expect(config.layerKinds).toHaveLength(config.numLayers);
    expect(config.ffnKinds).toHaveLength(config.numLayers);
    expectations[family]!(config);
  });

  it('covers every supported model_type', () => {
    expect(Object.keys(expectations).sort()).toEqual([...supportedModelTypes].sort());
  });

  it('tiny-granite-code', async () => {
    const config = expectModelType(await loadConfig(path.join(root, 'assets/models/tiny-granite-code')), 'granitemoehybrid');
    expect(config.layerKinds).toEqual(['mamba2', 'mamba2', 'attention', 'mamba2', 'mamba2', 'attention']);
    expect(config.ffnKinds).toEqual(Array(6).fill('dense'));
    expect(config.moe).toBeNull();
    expect(config.attention).toMatchObject({ numHeads: 6, numKeyValueHeads: 2, headDim: 32, scale: 1 });
    expect(config.attention.rope).toMatchObject({ theta: 10000, rotaryDim: 32 });
    expect(config.mamba).toMatchObject({ numHeads: 6, headDim: 64, stateSize: 32, innerSize: 384, convDim: 448 });
    expect(config.eosTokenIds).toEqual([0]);
  });
});

describe('error messages name the file and the JSON path', () => {
  it('a missing field', async () => {
    const { hidden_size: _dropped, ...json } = await fixtureJson('llama');
    expect(parseError(json)).toBe('config.json: hidden_size: missing (expected number)');
  });

  it('a mistyped field', async () => {
    const json = { ...(await fixtureJson('llama')), hidden_size: '64' };
    expect(parseError(json)).toBe('config.json: hidden_size: expected number, got string');
  });

  it('a non-integer size', async () => {
    const json = { ...(await fixtureJson('mamba2')), num_heads: 8.5 };
    expect(parseError(json)).toContain('config.json: num_heads: expected integer, got number');
  });

  it('a bad entry inside a list', async () => {
    const json = await fixtureJson('granitemoehybrid');
    json.layer_types = ['mamba', 'attention', 'moe', 'mamba'];
    expect(parseError(json)).toMatch(/^config\.json: layer_types\[2\]: expected one of "mamba", .*got "moe"$/);
  });

  it('a nested field', async () => {
    const json = await fixtureJson('llama');
    json.rope_parameters = { rope_type: 'default', rope_theta: 'big' };
    expect(parseError(json)).toBe('config.json: rope_parameters.rope_theta: expected number, got string');
  });

  it('a per-layer list of the wrong length', async () => {
    const json = await fixtureJson('lfm2');
    json.layer_types = ['conv', 'full_attention'];
    expect(parseError(json)).toBe('config.json: layer_types: has 2 entries, expected one per layer (num_hidden_layers = 4)');
  });

  it('an impossible Mamba-2 head layout', async () => {
    const json = { ...(await fixtureJson('bamba')), mamba_n_heads: 5, mamba_d_head: 'auto' };
    expect(parseError(json)).toContain('config.json: mamba_n_heads: mamba_n_heads = 5 must divide the mamba inner size 128');
  });

  it('an unknown model_type lists the supported ones', async () => {
    const json = { ...(await fixtureJson('llama')), model_type: 'gpt2' };
    const message = parseError(json);
    expect(message).toContain('config.json: model_type: unsupported model_type "gpt2"');
    for (const modelType of supportedModelTypes) expect(message).toContain(modelType);
  });

  it('a missing model_type', () => {
    expect(parseError({ hidden_size: 3 })).toMatch(/^config\.json: model_type: missing \(supported: llama, /);
  });

  it('names the full path of the file loadConfig read', async () => {
    const folder = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-config-'));
    try {
      const json = { ...(await fixtureJson('llama')), num_hidden_layers: -2 };
      await fsp.writeFile(path.join(folder, 'config.json'), JSON.stringify(json));
      await expect(loadConfig(folder)).rejects.toThrow(`${path.join(folder, 'config.json')}: num_hidden_layers: expected value > 0, got -2`);
      await fsp.writeFile(path.join(folder, 'config.json'), '{"model_type": "llama",');
      await expect(loadConfig(folder)).rejects.toThrow(/config\.json: not valid JSON/);
      await expect(loadConfig(path.join(folder, 'absent'))).rejects.toThrow(/absent\/config\.json: cannot read \(ENOENT\)/);
    } finally {
      await fsp.rm(folder, { recursive: true, force: true });
    }
  });
});

describe('transformers 4 and 5 spellings normalize alike', () => {
  it('layer_types "mamba"/"attention" and "linear_attention"/"full_attention"', async () => {
    const v5 = await fixtureJson('granitemoehybrid');
    const v4 = {
      ...v5,
      layer_types: (v5.layer_types as string[]).map((kind) => (kind === 'linear_attention' ? 'mamba' : 'attention')),
    };
    expect(parseConfig(v4).layerKinds).toEqual(parseConfig(v5).layerKinds);
    expect(parseConfig(v4).layerKinds).toEqual(['mamba2', 'attention', 'mamba2', 'mamba2']);
  });

  it('rope_theta / rope_scaling at the top level and rope_parameters', async () => {
    const { rope_parameters: _dropped, ...rest } = await fixtureJson('llama');
    const v4 = { ...rest, rope_theta: 500000, rope_scaling: { type: 'linear', factor: 2 } };
    const v5 = { ...rest, rope_parameters: { rope_type: 'linear', rope_theta: 500000, factor: 2 } };
    const fromV4 = expectModelType(parseConfig(v4), 'llama').attention.rope;
    const fromV5 = expectModelType(parseConfig(v5), 'llama').attention.rope;
    expect(fromV4).toEqual(fromV5);
    expect(fromV5).toEqual({ type: 'linear', theta: 500000, partialRotaryFactor: 1, rotaryDim: 16, scaling: { factor: 2 } });
  });

  it('partial_rotary_factor at the top level or in rope_parameters', async () => {
    const { rope_parameters: _dropped, partial_rotary_factor: _factor, ...rest } = await fixtureJson('qwen3_next');
    const v4 = { ...rest, rope_theta: 10000, partial_rotary_factor: 0.5 };
    const v5 = { ...rest, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 } };
    expect(expectModelType(parseConfig(v4), 'qwen3_next').attention.rope?.rotaryDim).toBe(8);
    expect(expectModelType(parseConfig(v5), 'qwen3_next').attention.rope?.rotaryDim).toBe(8);
    expect(expectModelType(parseConfig(rest), 'qwen3_next').attention.rope?.partialRotaryFactor).toBe(0.25);
  });

  it('gemma3n rope_theta + rope_local_base_freq and per-kind rope_parameters', async () => {
    const { rope_parameters: _dropped, ...rest } = await fixtureJson('gemma3n_text');
    const v4 = expectModelType(parseConfig({ ...rest, rope_theta: 1_000_000, rope_local_base_freq: 10_000 }), 'gemma3n_text');
    const v5 = expectModelType(await loadConfig(fixture('gemma3n_text')), 'gemma3n_text');
    expect(v4.attention.rope).toEqual(v5.attention.rope);
    expect(v4.slidingRope).toEqual(v5.slidingRope);
  });

  it('layer patterns derived when layer_types is absent', async () => {
    const { layer_types: _qwenTypes, ...qwen } = await fixtureJson('qwen3_next');
    expect(parseConfig({ ...qwen, num_hidden_layers: 8 }).layerKinds).toEqual([
      'gated_deltanet', 'gated_deltanet', 'gated_deltanet', 'attention',
      'gated_deltanet', 'gated_deltanet', 'gated_deltanet', 'attention',
    ]);
    const { layer_types: _lfmTypes, ...lfm2 } = await fixtureJson('lfm2');
    expect(parseConfig({ ...lfm2, full_attn_idxs: [1, 3] }).layerKinds).toEqual(['short_conv', 'attention', 'short_conv', 'attention']);
    expect(parseConfig(lfm2).layerKinds).toEqual(Array(4).fill('attention'));
    const { layer_types: _graniteTypes, ...granite } = await fixtureJson('granitemoehybrid');
    expect(parseConfig(granite).layerKinds).toEqual(Array(4).fill('mamba2'));
  });

  it('tagged and bare non-finite floats', () => {
    const tagged = parseConfigJson('{"a": [0.0, {"__float__": "Infinity"}], "b": {"__float__": "-Infinity"}, "c": {"__float__": "NaN"}}');
    expect(tagged.a).toEqual([0, Infinity]);
    expect(tagged.b).toBe(-Infinity);
    expect(tagged.c).toBeNaN();
    const bare = parseConfigJson('{"time_step_limit": [0.0, Infinity], "s": "Infinity NaN", "m": -Infinity}');
    expect(bare).toEqual({ time_step_limit: [0, Infinity], s: 'Infinity NaN', m: -Infinity });
  });
});

describe('HF defaults for absent fields', () => {
  it('a minimal llama config', () => {
    const config = expectModelType(parseConfig({ model_type: 'llama', vocab_size: 100, hidden_size: 256, num_hidden_layers: 2 }), 'llama');
    expect(config).toMatchObject({
      intermediateSize: 11008,
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenIds: [2],
      padTokenId: null,
      normEps: 1e-6,
      hiddenAct: 'silu',
    });
    expect(config.attention).toMatchObject({ numHeads: 32, numKeyValueHeads: 32, headDim: 8, maxPositionEmbeddings: 2048 });
    expect(config.attention.rope?.theta).toBe(10000);
  });

  it('null means the default where HF treats it so', async () => {
    const falcon = expectModelType(parseConfig({ ...(await fixtureJson('falcon_h1')), mamba_d_ssm: null, mlp_multipliers: null, key_multiplier: null }), 'falcon_h1');
    expect(falcon.mamba.innerSize).toBe(128); // mamba_expand * hidden_size
    expect(falcon.multipliers.mlpGate).toBe(1);
    expect(falcon.multipliers.key).toBe(1);
    const granite = expectModelType(parseConfig({ ...(await fixtureJson('granitemoehybrid')), num_key_value_heads: null }), 'granitemoehybrid');
    expect(granite.attention.numKeyValueHeads).toBe(4);
  });

  it('Mamba-1 dt rank "auto" is ceil(hidden_size / 16)', async () => {
    const mamba = expectModelType(parseConfig({ ...(await fixtureJson('mamba')), time_step_rank: 'auto', hidden_size: 72 }), 'mamba');
    expect(mamba.mamba.dtRank).toBe(5);
    expect(mamba.mamba.innerSize).toBe(128); // intermediate_size as written wins over expand * hidden_size
  });

  it('LFM2 MLP width with block_auto_adjust_ff_dim', async () => {
    const lfm2 = expectModelType(parseConfig({ ...(await fixtureJson('lfm2')), intermediate_size: 12288, block_auto_adjust_ff_dim: true, block_ffn_dim_multiplier: 1.0, block_multiple_of: 256 }), 'lfm2');
    expect(lfm2.ffnSize).toBe(8192);
  });

  it('Liquid aliases for LFM2', async () => {
    const { rope_parameters: _dropped, tie_word_embeddings: _tie, ...rest } = await fixtureJson('lfm2');
    const lfm2 = expectModelType(parseConfig({ ...rest, theta: 5000, tie_embedding: false }), 'lfm2');
    expect(lfm2.attention.rope?.theta).toBe(5000);
    expect(lfm2.tieWordEmbeddings).toBe(false);
  });
});
