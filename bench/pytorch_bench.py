"""The bench configurations in PyTorch transformers on the same GPU, for comparison with `strata bench`.

Random weights; prompt of 128 tokens, then 128 new tokens, batch 1 and 8, float32 and float16:
prefill tokens/s (one forward over the prompt) and decode tokens/s (an eager loop of single-token forwards
with the model's cache, greedy). For Llama in float16 also torch.compile (default mode) with a static cache through generate().
Prints one JSON object. Usage: python3 bench/pytorch_bench.py [--configs a,b] [--out file.json]
"""
import argparse, json, time, sys
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoConfig

sys.path.insert(0, __file__.rsplit('/', 1)[0])
CONFIGS = json.load(open(__file__.rsplit('/', 1)[0] + '/configs.json'))


def sync():
    torch.cuda.synchronize()


def build(cfg, dtype):
    config = AutoConfig.for_model(**cfg)
    torch.manual_seed(0)
    with torch.device('cuda'):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    return model.eval()


@torch.inference_mode()
def eager(model, batch, prompt, new):
    ids = torch.randint(0, 32000, (batch, prompt), device='cuda')
    out = model(ids, use_cache=True)  # warm-up
    sync()
    t = time.perf_counter()
    out = model(ids, use_cache=True)
    sync()
    prefill = time.perf_counter() - t
    past = out.past_key_values
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    t = time.perf_counter()
    for _ in range(new):
        out = model(tok, past_key_values=past, use_cache=True)
        past = out.past_key_values
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    decode = time.perf_counter() - t
    return {'prefillTokensPerSecond': batch * prompt / prefill, 'decodeTokensPerSecond': batch * new / decode}


@torch.inference_mode()
def compiled_static(model, batch, prompt, new):
    ids = torch.randint(0, 32000, (batch, prompt), device='cuda')
    model.generation_config.cache_implementation = 'static'
    # mode='reduce-overhead' (CUDA graphs) fails inside generate() on transformers 5.17 ('accessing tensor output of
    # CUDAGraphs that has been overwritten'), so the default mode: fused kernels, launches from Python per token
    model.forward = torch.compile(model.forward, fullgraph=True)
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
    t = time.perf_counter()
    model.generate(ids, **kw)  # compiles
    sync()
    compile_s = time.perf_counter() - t
    model.generate(ids, **kw)
    sync()
    t = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
    sync()
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    model.generate(ids, **kw)
    sync()
    total = time.perf_counter() - t
    return {'compileSeconds': compile_s, 'prefillTokensPerSecond': batch * prompt / prefill, 'decodeTokensPerSecond': batch * new / max(total - prefill, 1e-9)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--configs', default=','.join(CONFIGS))
    ap.add_argument('--out')
    ap.add_argument('--compiled-only', action='store_true', help='only the torch.compile static-cache runs (Llama, float16)')
    a = ap.parse_args()
    rows = []
    for name in a.configs.split(','):
        for dtype in (torch.float32, torch.float16):
            for batch in (1, 8):
                try:
                    if a.compiled_only and (name != 'llama-400m' or dtype != torch.float16):
                        continue
                    model = build(CONFIGS[name], dtype)
                    if not a.compiled_only:
                        r = eager(model, batch, 128, 128)
                        rows.append({'config': name, 'dtype': str(dtype).split('.')[-1], 'batch': batch, 'mode': 'eager', **r})
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    if name == 'llama-400m' and dtype == torch.float16:
                        r = compiled_static(model, batch, 128, 128)
                        rows.append({'config': name, 'dtype': str(dtype).split('.')[-1], 'batch': batch, 'mode': 'torch.compile static cache', **r})
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    del model
                    torch.cuda.empty_cache()
                except Exception as e:  # report, keep going
                    rows.append({'config': name, 'dtype': str(dtype), 'batch': batch, 'error': f'{type(e).__name__}: {e}'[:300]})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if a.out:  # keep what is measured so far, in case the run is cut short
                    open(a.out, 'w').write(json.dumps({'partial': True, 'results': rows}, indent=2))
    report = {'torch': torch.__version__, 'transformers': transformers.__version__, 'gpu': torch.cuda.get_device_name(0), 'results': rows}
    text = json.dumps(report, indent=2)
    if a.out:
        open(a.out, 'w').write(text)
    print(text)


if __name__ == '__main__':
    main()
