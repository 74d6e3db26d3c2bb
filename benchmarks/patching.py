"""Activation patching: transformer-lens's sweeps vs interp.patching, same inputs, one process.

Models: (i) a GPT-2-small-shaped random-init model (12 layers x 12 heads, d_model 768, vocab
50257) with 8 IOI-like clean/corrupted pairs of 15 tokens; (ii) the zoo's ``ioi`` model with 8
IOI prompts. Sweeps: head output over all positions, head output by position (on a subset of
layers, the same for both sides), resid_pre by layer x position; then path patching sender ->
logits against a plain ``run_with_hooks`` loop (transformer-lens has no path-patching
function). Both sides use one thread.

Peak memory: each of our sweeps and one full ``run_with_cache`` (every hook) of the same batch
runs in a fresh subprocess while a thread samples the resident set size every millisecond; the
table reports the peak above the RSS just before the call, and ours as a multiple of the cached
run's.

Run: ``python benchmarks/patching.py [--by-pos-layers 0,6] [--skip-zoo] [--skip-memory]``.
The last line is
``patching: speedup_heads=<x> speedup_by_pos=<y> speedup_resid=<z> max_abs_diff=<d>``
(speedups for the GPT-2-small shape; the diff is the max over every sweep and model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

warnings.filterwarnings("ignore")


def gpt2_small_shape(tmp: Path):
    import transformers as T

    import interp
    from interp.prompts import _language as languages

    tok = languages.save_tokenizer(tmp)
    cfg = T.GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    T.GPT2LMHeadModel(cfg).eval().save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return interp.load_model(tmp)


def ioi_like_pairs(n: int = 8, n_pos: int = 15, vocab: int = 1000, seed: int = 0):
    """Random 15-token prompts with IOI structure: IO at 2, S at 4 and 10; answer IO, wrong S;
    the corrupted prompt replaces the three name tokens with other names (ABC)."""
    from interp.prompts import PromptSet

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(100, vocab, (n, n_pos), generator=g)
    clean[:, 0] = 0
    names = torch.randint(10, 100, (n, 5), generator=g)
    names[:, 1] = (names[:, 0] + 1 + torch.arange(n)) % 90 + 10
    clean[:, 2], clean[:, 4], clean[:, 10] = names[:, 0], names[:, 1], names[:, 1]
    corrupted = clean.clone()
    corrupted[:, 2], corrupted[:, 4], corrupted[:, 10] = names[:, 2], names[:, 3], names[:, 3] + 1
    return PromptSet(clean_tokens=clean, corrupted_tokens=corrupted, answer_ids=names[:, 0],
                     wrong_ids=names[:, 1], answer_pos=torch.full((n,), n_pos - 1))


def _tl_metric(ps, reduce: str = "mean"):
    b = torch.arange(len(ps))

    def metric(logits):
        row = logits[b, ps.answer_pos]
        ld = row[b, ps.answer_ids] - row[b, ps.wrong_ids]
        return ld.mean() if reduce == "mean" else ld

    return metric


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench(model, ps, by_pos_layers: list[int], label: str, with_path: bool = True
          ) -> list[dict]:
    from transformer_lens import patching as P

    from interp.patching import activation_patching

    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, ps.n_pos
    clean, corrupted = ps.clean_tokens, ps.corrupted_tokens
    metric = _tl_metric(ps)
    with torch.no_grad():
        model(corrupted)  # warm-up
        _, t_fwd = _timed(lambda: model(corrupted))
        _, t_fwd2 = _timed(lambda: model(corrupted))
        t_fwd = min(t_fwd, t_fwd2)
        _, cache = model.run_with_cache(clean)
    rows = []

    def record(name, ref, t_ref, ours, t_ours, n_patch):
        diff = (ours.raw.reshape(-1) - ref.reshape(-1).cpu()).abs().max().item()
        rows.append({"model": label, "sweep": name, "patches": n_patch, "tl_s": t_ref,
                     "ours_s": t_ours, "speedup": t_ref / t_ours, "max_abs_diff": diff,
                     "ours_fwd_per_patch": t_ours / n_patch / t_fwd,
                     "tl_fwd_per_patch": t_ref / n_patch / t_fwd})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)

    ref, t_ref = _timed(lambda: P.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric))
    ours, t_ours = _timed(lambda: activation_patching(model, ps, target="z", per_position=False))
    record("heads_all_pos", ref, t_ref, ours, t_ours, n_layers * n_heads)

    index_df = pd.DataFrame(list(itertools.product(by_pos_layers, range(n_pos), range(n_heads))),
                            columns=["layer", "pos", "head_index"])
    ref, t_ref = _timed(lambda: P.get_act_patch_attn_head_out_by_pos(
        model, corrupted, cache, metric, index_axis_names=None, index_df=index_df))
    ours, t_ours = _timed(lambda: activation_patching(model, ps, target="z", per_position=True,
                                                      layers=by_pos_layers))
    record(f"heads_by_pos(layers {by_pos_layers})", ref, t_ref, ours, t_ours, len(index_df))

    ref, t_ref = _timed(lambda: P.get_act_patch_resid_pre(model, corrupted, cache, metric))
    ours, t_ours = _timed(lambda: activation_patching(model, ps, target="resid_pre"))
    record("resid_pre", ref, t_ref, ours, t_ours, n_layers * n_pos)
    if with_path:
        from interp.patching import path_patching

        ref, t_ref = _timed(lambda: _slow_path_to_logits(model, ps, _tl_metric(ps, "mean")))
        ours, t_ours = _timed(lambda: path_patching(model, ps, receivers="logits"))
        record("path_to_logits (vs a run_with_hooks loop)", ref, t_ref, ours, t_ours,
               n_layers * n_heads)
    print(f"[{label}] one forward of the batch: {t_fwd * 1000:.1f} ms", flush=True)
    return rows


def _slow_path_to_logits(model, ps, metric):
    """Path patching sender -> logits, one forward per sender: the sender head's z from the
    corrupted run, every later head's z frozen to its clean value (MLPs recomputed)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        _, orig = model.run_with_cache(ps.clean_tokens, names_filter=lambda n: n.endswith("hook_z"))
        _, new = model.run_with_cache(ps.corrupted_tokens, names_filter=lambda n: n.endswith("hook_z"))
        out = torch.zeros(n_layers, n_heads)
        for layer in range(n_layers):
            for head in range(n_heads):
                def send(z, hook, layer=layer, head=head):
                    z = z.clone()
                    z[:, :, head] = new[f"blocks.{layer}.attn.hook_z"][:, :, head]
                    return z

                # freeze later heads to their clean z (keyed by our name: hook.name is the alias)
                later = [f"blocks.{x}.attn.hook_z" for x in range(layer + 1, n_layers)]
                hooks = [(f"blocks.{layer}.attn.hook_z", send)] + [
                    (name, lambda z, hook, name=name: orig[name]) for name in later]
                out[layer, head] = metric(model.run_with_hooks(ps.clean_tokens, fwd_hooks=hooks))
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_above_start(fn) -> int:
    """Peak RSS above the RSS at the start while ``fn`` runs (sampled every 1 ms)."""
    import gc

    gc.collect()
    start = _rss_bytes()
    peak = [start]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    peak[0] = max(peak[0], _rss_bytes())
    return peak[0] - start


def _memory_child(model_ref: str, which: str, by_pos_layers: list[int]) -> None:
    torch.set_num_threads(1)
    import interp
    from interp.patching import activation_patching

    if model_ref == "ioi":
        from interp.prompts import ioi

        model = interp.load_model("ioi")
        ps = ioi(model, 8, corruption="abc", seed=0)
    else:
        model = interp.load_model(model_ref)
        ps = ioi_like_pairs()
    calls = {
        "run_with_cache": lambda: model.run_with_cache(ps.corrupted_tokens),
        "heads_all_pos": lambda: activation_patching(model, ps, target="z", per_position=False),
        "heads_by_pos": lambda: activation_patching(model, ps, target="z", per_position=True,
                                                    layers=by_pos_layers),
        "resid_pre": lambda: activation_patching(model, ps, target="resid_pre"),
    }
    with torch.no_grad():
        calls[which]()  # one untimed call: lazy set-up (describe(), imports) outside the peak
        print(json.dumps({"peak": _peak_above_start(calls[which])}))


def memory(model_ref: str, label: str, by_pos_layers: list[int]) -> list[dict]:
    peaks = {}
    for which in ("run_with_cache", "heads_all_pos", "heads_by_pos", "resid_pre"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", model_ref, which,
             "--by-pos-layers", ",".join(map(str, by_pos_layers))],
            capture_output=True, text=True, check=True,
            # tensors above 64 KB get their own mapping and go back to the OS when freed, so the
            # RSS follows live memory (no reuse of an earlier call's freed heap)
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})
        peaks[which] = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    ref = max(peaks["run_with_cache"], 1)
    rows = [{"model": label, "call": k, "peak_MB": v / 2**20, "x_run_with_cache": v / ref}
            for k, v in peaks.items()]
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3g}"), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--by-pos-layers", default="0,6", help="layers for the by-position sweep")
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-path", action="store_true", help="no path-patching row")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child, [int(x) for x in args.by_pos_layers.split(",")])
        return
    torch.set_num_threads(1)
    layers = [int(x) for x in args.by_pos_layers.split(",")]
    rows, mem_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        model = gpt2_small_shape(Path(tmp))
        rows += bench(model, ioi_like_pairs(), layers, "gpt2-small-shape", not args.skip_path)
        del model
        if not args.skip_memory:
            mem_rows += memory(tmp, "gpt2-small-shape", layers)
    if not args.skip_zoo:
        import interp
        from interp.prompts import ioi

        zoo = interp.load_model("ioi")
        zps = ioi(zoo, 8, corruption="abc", seed=0)
        zoo_layers = [x for x in layers if x < zoo.cfg.n_layers] or [0]
        rows += bench(zoo, zps, zoo_layers, "zoo-ioi", not args.skip_path)
        if not args.skip_memory:
            mem_rows += memory("ioi", "zoo-ioi", zoo_layers)
    df = pd.DataFrame(rows)
    print()
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    if mem_rows:
        print()
        print(pd.DataFrame(mem_rows).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    g = df[df.model == "gpt2-small-shape"].set_index("sweep")
    sp = {}
    for key in ("heads_all_pos", "heads_by_pos", "resid_pre"):
        sweep = next(i for i in g.index if i.startswith(key))
        sp[key] = float(g.loc[sweep, "speedup"])
    print(f"patching: speedup_heads={sp['heads_all_pos']:.2f} speedup_by_pos={sp['heads_by_pos']:.2f} "
          f"speedup_resid={sp['resid_pre']:.2f} max_abs_diff={df.max_abs_diff.max():.2e}")


if __name__ == "__main__":
    main()
