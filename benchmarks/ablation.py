"""Single-head zero-ablation knockout sweep: ours vs a plain loop of run_with_hooks.

Model: GPT-2-small shape (12 layers, 12 heads, d_model 768, vocab 50257), random init, saved
in HF format and loaded through interp.load_model. Prompts: 8 x 15 random tokens, logit
difference between two random tokens at the last position. Both sides run in this process on
the same inputs with one thread; the speedup is the ratio of process CPU times (wall times
are printed too; on a shared machine they mostly measure the scheduler). The last line is ``ablation: speedup=<x> max_abs_diff=<d>``.

    .venv/bin/python benchmarks/ablation.py [--layers 12] [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")


def build_model(root: Path, n_layers: int):
    import transformers as T

    import interp
    from interp.prompts import _language as languages

    tok = languages.save_tokenizer(root / "_tok")
    cfg = T.GPT2Config(n_layer=n_layers, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    hf = T.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(root / "gpt2s", safe_serialization=True)
    tok.save_pretrained(root / "gpt2s")
    del hf
    return interp.load_model(root / "gpt2s")


def reference_loop(model, tokens, answer, wrong, pos):
    """One run_with_hooks per head, zeroing that head's z slice."""
    from interp import hooks as H

    L, nh = model.cfg.n_layers, model.cfg.n_heads
    bi = torch.arange(tokens.shape[0])

    def ld(logits):
        x = logits[bi, pos]
        return x[bi, answer] - x[bi, wrong]

    out = torch.zeros(L, nh, tokens.shape[0])
    with torch.no_grad():
        base = ld(model(tokens))
        for layer in range(L):
            for h in range(nh):
                def hook(z, hook, h=h):
                    z = z.clone()
                    z[:, :, h] = 0
                    return z

                logits = model.run_with_hooks(tokens, fwd_hooks=[(H.z(layer), hook)])
                out[layer, h] = ld(logits) - base
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from interp.ablation import knockout_sweep
    from interp.prompts import PromptSet

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp), args.layers)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(10, 1600, (8, 15), generator=g)
        answer, wrong = torch.randint(10, 1600, (8,), generator=g), torch.randint(10, 1600, (8,), generator=g)
        pos = torch.full((8,), 14)
        ps = PromptSet(clean_tokens=tokens, answer_ids=answer, wrong_ids=wrong, answer_pos=pos)
        warm = PromptSet(clean_tokens=tokens[:1], answer_ids=answer[:1], wrong_ids=wrong[:1], answer_pos=pos[:1])
        knockout_sweep(model, warm, include_mlps=False, n_boot=10)  # warm-up both paths
        with torch.no_grad():
            model(tokens)
        wall = {"ours": [], "ref": []}
        cpu = {"ours": [], "ref": []}
        for _ in range(args.repeats):
            for side in ("ours", "ref"):
                t0, c0 = time.perf_counter(), time.process_time()
                if side == "ours":
                    ours = knockout_sweep(model, ps, method="zero", include_mlps=False)
                else:
                    ref = reference_loop(model, tokens, answer, wrong, pos)
                wall[side].append(time.perf_counter() - t0)
                cpu[side].append(time.process_time() - c0)
        diff = float((ours.per_example - ref).abs().max())
        print(f"model: GPT-2-small shape, {args.layers} layers x 12 heads, random init; prompts 8 x 15 tokens")
        for label, t in (("wall", wall), ("cpu", cpu)):
            print(f"{label} time: ours (knockout_sweep, replay) {min(t['ours']):.2f} s, reference "
                  f"(run_with_hooks loop) {min(t['ref']):.2f} s, ratio {min(t['ref']) / min(t['ours']):.2f}")
        # process CPU time: on a shared machine wall time mostly measures the scheduler
        speedup = min(cpu["ref"]) / min(cpu["ours"])
        print(f"ablation: speedup={speedup:.2f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
