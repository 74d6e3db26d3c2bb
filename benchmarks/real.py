"""Every public method on real model shapes, as forward-equivalents and memory multiples.

Models: random-init Hugging Face directories with the shapes of GPT-2 small (12 layers x 12
heads, d_model 768, vocab 50,257) and Qwen2.5-0.5B (24 layers, 14 query / 2 key-value heads,
d_model 896, vocab 151,936), saved once under ``$INTERP_BENCH_DIR`` (default
``~/.cache/interp/bench-models``) and loaded with ``interp.load_model(dir)``, the path a Hub
model takes. Prompts: 16 IOI prompts of the zoo's language (mixed templates, ~20 tokens).

For each method: its time divided by the time of one plain forward of the same batch measured
in the same run (``fwd``), and its peak resident memory above the RSS before the call, as a
multiple of the same for one ``run_with_cache`` of every hook (``mem``; sampled every
millisecond in a thread, in this process: memory the allocator kept from an earlier call is
reused without showing, so the multiples are lower bounds). Retrieval scoring reads its own
512-token prompts, so its row also gives ``mem_own``, against a cached run of that input shape;
``worst_mem_ratio`` uses it. Where transformer-lens has the same
computation it runs on the same inputs and the ratio is printed (``vs_tl``: its time / ours).

Run: ``python benchmarks/real.py [--shapes gpt2,qwen] [--tl-patching] [--tl-edges]
[--device cuda] [--dtype bfloat16] [--long 4096 | --long-only] [--basic]``. The last line is
``real: lens_fwd=<x> eap_fwd=<y> atp_fwd=<z> path_fwd_per_sender=<p> heads_ioi_vs_tl=<h>
worst_mem_ratio=<m> max_abs_diff=<d>`` (the worst / largest over the shapes run;
``heads_ioi_vs_tl`` needs ``--tl-patching``, else ``nan``).
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

warnings.filterwarnings("ignore")

SHAPES = {
    "gpt2": dict(kind="gpt2", n_layer=12, n_head=12, n_embd=768, vocab=50257),
    "qwen": dict(kind="qwen2", n_layer=24, n_head=14, n_kv=2, n_embd=896, d_mlp=4864,
                 vocab=151936),
}


def _bench_dir() -> Path:
    return Path(os.environ.get("INTERP_BENCH_DIR", Path.home() / ".cache/interp/bench-models"))


def model_dir(name: str) -> Path:
    """A random-init HF directory of the shape (made once, reused)."""
    import transformers as T

    from interp.prompts._language import save_tokenizer

    spec = SHAPES[name]
    out = _bench_dir() / name
    if (out / "config.json").is_file() and (out / "bench-version").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if spec["kind"] == "gpt2":
        cfg = T.GPT2Config(n_layer=spec["n_layer"], n_head=spec["n_head"], n_embd=spec["n_embd"],
                           n_positions=4096, vocab_size=spec["vocab"], bos_token_id=0,
                           eos_token_id=0, pad_token_id=0)
        model = T.GPT2LMHeadModel(cfg)
    else:
        cfg = T.Qwen2Config(vocab_size=spec["vocab"], hidden_size=spec["n_embd"],
                            intermediate_size=spec["d_mlp"], num_hidden_layers=spec["n_layer"],
                            num_attention_heads=spec["n_head"], num_key_value_heads=spec["n_kv"],
                            max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                            tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                            pad_token_id=0)
        model = T.Qwen2ForCausalLM(cfg)
    # HF initialises the padding row of the embedding to zero; token 0 is also BOS here, and a
    # zero vector under RMSNorm makes the backward overflow (1/sqrt(eps) per layer): give it a
    # random row like every other token, as a trained model has
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[0].normal_(0.0, float(emb[1:].std()))
    model.eval().save_pretrained(out, safe_serialization=True)
    save_tokenizer(out)
    (out / "bench-version").write_text("2\n")
    return out


class PeakRSS:
    """Peak resident set size above the value at entry, sampled every millisecond."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0

    def __enter__(self):
        self._base = self._proc.memory_info().rss
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._proc.memory_info().rss - self._base)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss - self._base)


class PeakCUDA:
    """Peak CUDA memory allocated above the value at entry (the GPU counterpart of PeakRSS)."""

    def __enter__(self):
        torch.cuda.synchronize()
        self._base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated() - self._base


DEVICE = "cpu"


def measure(fn, repeat: int = 1):
    """(result, seconds (best of ``repeat``), peak bytes above the start). On CUDA the time
    includes a synchronisation and the memory is the allocator's peak."""
    best, out, peak = math.inf, None, 0
    for _ in range(repeat):
        with (PeakCUDA() if DEVICE.startswith("cuda") else PeakRSS()) as m:
            t = time.perf_counter()
            out = fn()
            if DEVICE.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        peak = max(peak, m.peak)
    return out, best, peak


def _tl_logit_diff(ps):
    def metric(logits):  # one example's logits [1, pos, vocab] or the batch
        rows = torch.arange(logits.shape[0])
        ap = ps.answer_pos[: logits.shape[0]]
        row = logits[rows, ap]
        return (row[rows, ps.answer_ids[: len(rows)]] - row[rows, ps.wrong_ids[: len(rows)]]).mean()

    return metric


def run_shape(name: str, *, tl_patching: bool, tl_edges: bool, dtype: str = "float32",
              extra: bool = True, only: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    import interp
    from interp import prompts as P
    from interp.ablation import direct_vs_total, head_importance, knockout_sweep, prune_heads
    from interp.attribution import attribution_patching, edge_attribution
    from interp.circuits import discover
    from interp.heads import detect_heads, induction_scores
    from interp.lens import direct_logit_attribution, logit_lens
    from interp.patching import activation_patching, path_patching
    from interp.retrieval import retrieval_scores

    model = interp.load_model(model_dir(name), device=DEVICE, dtype=dtype)
    ps = P.ioi(model, 16, seed=0)
    tokens = ps.clean_tokens
    with torch.no_grad():
        model(tokens)  # warm-up
        _, f_time, _ = measure(lambda: model(tokens), repeat=3)
    cache_mem = _cache_bytes(model, tokens)
    rows: list[dict] = []
    summary: dict = {"max_abs_diff": 0.0}

    def add(method: str, fn, *, tl=None, compare=None, own_cache=None):
        if only and not any(o in method for o in only):
            return None
        out, t, mem = measure(fn)
        row = {"shape": name, "method": method, "seconds": round(t, 2),
               "fwd": round(t / f_time, 2), "mem": round(mem / max(cache_mem, 1), 2)}
        if own_cache is not None:  # against a cached run of the method's own input shape
            row["mem_own"] = round(mem / max(own_cache, 1), 2)
        if tl is not None:
            ref, t_tl, _ = measure(tl)
            row["vs_tl"] = round(t_tl / t, 2)
            if compare is not None:
                d = float(compare(out, ref))
                row["max_abs_diff"] = d
                summary["max_abs_diff"] = max(summary["max_abs_diff"], d)
        rows.append(row)
        print(row, flush=True)
        return out

    add("logit_lens", lambda: logit_lens(model, ps), tl=lambda: _tl_lens(model, ps))
    add("direct_logit_attribution", lambda: direct_logit_attribution(model, ps))
    add("attribution_patching(z)", lambda: attribution_patching(model, ps, target="z"))
    add("edge_attribution", lambda: edge_attribution(model, ps),
        tl=(lambda: _tl_edges(model, ps)) if tl_edges else None)
    n_send = model.cfg.n_layers * model.cfg.n_heads
    res = add("path_patching(logits)", lambda: path_patching(model, ps, receivers="logits"))
    if res is not None:
        rows[-1]["fwd_per_sender"] = round(rows[-1]["fwd"] / n_send, 3)
        summary["path_fwd_per_sender"] = rows[-1]["fwd_per_sender"]
    del res
    tl = (lambda: _tl_heads(model, ps)) if tl_patching else None
    add("activation_patching(z, all pos)",
        lambda: activation_patching(model, ps, target="z", per_position=False),
        tl=tl, compare=(lambda o, r: (o.raw - r.cpu()).abs().max()) if tl_patching else None)
    add("activation_patching(resid_pre)", lambda: activation_patching(model, ps))
    add("knockout_sweep(mean)", lambda: knockout_sweep(model, ps, method="mean"))
    add("induction_scores", lambda: induction_scores(model, seq_len=20, batch=16))
    if extra:
        texts = list(ps.clean_text)
        add("detect_heads(previous_token)",
            lambda: detect_heads(model, texts, "previous_token"),
            tl=lambda: _tl_detect(model, texts),
            compare=lambda o, r: (o.values - r.float().cpu()).abs().max())
        add("head_importance", lambda: head_importance(model, ps))
        # pruning steps (importance under the mask, then the masked score) until the score
        # drops below the original; reported per step
        res = add("prune_heads", lambda: prune_heads(model, ps, stop_at=1.0, metric="prob"))
        if res is not None:
            steps = max(1, len(res.values) - 1)
            rows[-1].update(steps=steps, fwd_per_step=round(rows[-1]["fwd"] / steps, 2))
        add("direct_vs_total", lambda: direct_vs_total(model, ps))
        add("discover(eap)", lambda: discover(model, ps, method="eap"))
        add("discover(eap-ig-inputs, m=5)", lambda: discover(model, ps, method="eap-ig-inputs"))
        # retrieval on a 512-token needle grid (3 depths); a random model never stops, so every
        # trial decodes the full 20 steps
        own = _cache_bytes(model, torch.randint(10, 400, (3, 512))) if not only or any(
            o in "retrieval_scores" for o in only) else None
        add("retrieval_scores(512 tok x 3)",
            lambda: retrieval_scores(model, lengths=[512], depths=[0, 50, 100],
                                     max_new_tokens=20), own_cache=own)
    for r in rows:
        r["cache_mb"] = round(cache_mem / 2**20)
    by = {r["method"]: r for r in rows}
    def get(method, key="fwd"):
        return by.get(method, {}).get(key, math.nan)
    summary.update(lens_fwd=get("logit_lens"), eap_fwd=get("edge_attribution"),
                   atp_fwd=get("attribution_patching(z)"),
                   heads_ioi_vs_tl=get("activation_patching(z, all pos)", "vs_tl"),
                   worst_mem_ratio=max(r.get("mem_own", r["mem"]) for r in rows),
                   forward_s=f_time)
    return rows, summary


def _cache_bytes(model, tokens: torch.Tensor) -> int:
    """Peak memory of one ``run_with_cache`` of ``tokens``, the memory base of the methods that
    read inputs of that shape. The process may reuse freed memory for the cache (growth near
    0): never count less than the cache's own tensors."""
    with torch.no_grad():
        (_, cache), _, mem = measure(lambda: model.run_with_cache(tokens))
        mem = max(mem, sum(t.numel() * t.element_size() for t in cache.values()))
    del cache
    return mem


def run_long(name: str, *, n_tokens: int = 4096, dtype: str = "float32",
             only: tuple[str, ...] = ()) -> list[dict]:
    """Long context: retrieval scoring on one ``n_tokens`` needle trial and head patching of the
    last layer on a ``n_tokens`` prompt pair (one token differs near the start, so every later
    position changes), with the peak memory against one plain forward of the same input (a
    cache of every hook would hold every layer's full attention pattern: n_layers x n_heads x
    n_tokens^2 floats, 22 GB for the Qwen shape at 4096 tokens, which is what the methods must
    avoid)."""
    import interp
    from interp.patching import activation_patching
    from interp.prompts import PromptSet
    from interp.retrieval import retrieval_scores

    model = interp.load_model(model_dir(name), device=DEVICE, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(10, 400, (1, n_tokens), generator=g)
    corrupted = clean.clone()
    corrupted[0, 5] = 3 if int(clean[0, 5]) != 3 else 4
    ps = PromptSet.from_token_lists(clean.tolist(), [11], corrupted=corrupted.tolist(), wrong=[12])
    with torch.no_grad():
        _, f_time, f_mem = measure(lambda: model(clean))
    rows = []
    for method, fn in [
        ("retrieval_scores(1 trial, 8 steps)",
         lambda: retrieval_scores(model, lengths=[n_tokens], depths=[50], max_new_tokens=8)),
        ("activation_patching(z, last layer)",
         lambda: activation_patching(model, ps, target="z", per_position=False,
                                     layers=[model.cfg.n_layers - 1])),
    ]:
        if only and not any(o in method for o in only):
            continue
        _, t, mem = measure(fn)
        row = {"shape": f"{name} {n_tokens} tok", "method": method, "seconds": round(t, 1),
               "fwd": round(t / f_time, 2), "mem_vs_forward": round(mem / max(f_mem, 1), 2),
               "peak_mb": round(mem / 2**20), "forward_mb": round(f_mem / 2**20)}
        rows.append(row)
        print(row, flush=True)
    return rows


def _tl_detect(model, texts):
    from transformer_lens.head_detector import detect_head

    return detect_head(model, texts, "previous_token_head")


def _tl_lens(model, ps):
    from transformer_lens.tools.analysis import logit_lens as tl_logit_lens

    with torch.no_grad():
        return tl_logit_lens(model, ps.clean_tokens, positions=None, return_type="probs",
                             top_k=5)


def _tl_edges(model, ps):
    from transformer_lens.tools.analysis.attribution_patching import (
        EdgeAttributionConfig,
        attribution_patch,
    )

    def metric(logits):  # one example: [1, pos, vocab]; fixed columns (timing only)
        return logits[0, -1, 0] - logits[0, -1, 1]

    return attribution_patch(model, ps.clean_tokens, ps.require_corrupted(), metric,
                             EdgeAttributionConfig(granularity="edge"))


def _tl_heads(model, ps):
    from transformer_lens import patching as TLP

    metric = _tl_logit_diff(ps)
    with torch.no_grad():
        _, cache = model.run_with_cache(ps.clean_tokens)
        return TLP.get_act_patch_attn_head_out_all_pos(model, ps.require_corrupted(), cache,
                                                       lambda lg: metric(lg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="gpt2,qwen")
    ap.add_argument("--tl-edges", action="store_true",
                    help="also time transformer-lens's edge-level attribution_patch (per example)")
    ap.add_argument("--tl-patching", action="store_true",
                    help="also time transformer-lens's head sweep (n_layers x n_heads forwards)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    ap.add_argument("--basic", action="store_true",
                    help="only the original methods (skip importance, pruning, direct-vs-total, "
                         "circuit discovery, retrieval)")
    ap.add_argument("--long", type=int, default=0, metavar="TOKENS",
                    help="also run retrieval and patching on one prompt of TOKENS tokens")
    ap.add_argument("--only", default="", help="comma-separated parts of method names to run "
                    "(e.g. 'logit_lens,edge_attribution')")
    ap.add_argument("--long-only", action="store_true", help="only the long-context rows "
                    "(4096 tokens unless --long says otherwise)")
    args = ap.parse_args()
    global DEVICE
    from interp.models import resolve_device

    DEVICE = resolve_device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows, sums = [], []
    if args.long or args.long_only:
        for name in args.shapes.split(","):
            rows += run_long(name.strip(), n_tokens=args.long or 4096, dtype=args.dtype,
                             only=tuple(o for o in args.only.split(",") if o))
    if args.long_only:
        print(pd.DataFrame(rows).to_string(index=False))
        return
    for name in args.shapes.split(","):
        r, s = run_shape(name.strip(), tl_patching=args.tl_patching, tl_edges=args.tl_edges,
                         dtype=args.dtype, extra=not args.basic,
                         only=tuple(o for o in args.only.split(",") if o))
        rows += r
        sums.append(s)
    print(pd.DataFrame(rows).to_string(index=False))
    for s, name in zip(sums, args.shapes.split(",")):
        print(f"{name}: one forward = {s['forward_s']:.3f} s")

    def worst(key, f=max):
        vals = [s[key] for s in sums if not math.isnan(s.get(key, math.nan))]
        return f(vals) if vals else math.nan

    print(f"real: lens_fwd={worst('lens_fwd'):.2f} eap_fwd={worst('eap_fwd'):.2f} "
          f"atp_fwd={worst('atp_fwd'):.2f} "
          f"path_fwd_per_sender={worst('path_fwd_per_sender'):.3f} "
          f"heads_ioi_vs_tl={worst('heads_ioi_vs_tl', min):.2f} "
          f"worst_mem_ratio={worst('worst_mem_ratio'):.2f} "
          f"max_abs_diff={worst('max_abs_diff'):.2e}")


if __name__ == "__main__":
    main()
