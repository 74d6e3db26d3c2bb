"""Zoo recipe ``modadd``: a + b mod p, the grokking setting of Nanda et al. 2023.

Inputs are ``BOS a b =`` (four tokens); the answer ``(a + b) mod p`` is read at ``=``. A
one-layer transformer without normalisation (4 heads, ReLU MLP of 4 x d_model), initialised as
in the paper (std ``1/sqrt(d_model)``), trained full batch on a fixed fraction of the p^2 pairs
with the paper's optimiser (AdamW, lr 1e-3, weight decay 1.0, betas 0.9/0.98). Departures from
the paper, and why:

* p = 59, d_model 64, 40% of pairs for training (paper: 113, 128, 30%). A full-batch step of the
  paper's size costs about 0.6 s on a 2-core CPU (about 20 GFLOP) and its grokking takes about
  10k steps: two hours. This size costs about 0.04 s per step on one thread and groks at about
  5k steps (14 minutes for the 20k-step run).
* The model is a GPT-2 directory, so it loads through the same Hugging Face path as every other
  model and every method of the library applies. GPT-2 blocks always have LayerNorms; here each
  one is frozen into an exact mean subtraction (see :func:`disable_layer_norms`), a fixed linear
  map, so the network is norm-free like the paper's. A BOS token is prepended.
* Hugging Face's default initialisation (std 0.02) generalises without a memorisation phase at
  this size, and with real LayerNorms the solution spreads over many frequencies; both were
  tried, and the paper's initialisation without norms reproduces its picture.

Checkpoints (float16, HF format) are saved log-spaced and every 500 steps under
``checkpoints/step_<N>``; the training pairs are in ``split.safetensors``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from interp.models.train import common as C

NAME = "modadd"
SEED = 0
P = 59
TRAIN_FRACTION = 0.4
LR, WD, BETAS = 1e-3, 1.0, (0.9, 0.98)
D_MODEL, N_HEADS, D_MLP = 64, 4, 256
NORM_EPS, NORM_GAIN = 1e8, 1e4


def vocab(p: int = P) -> list[str]:
    """Token strings: the numbers ``0 .. p-1`` (ids equal their value), ``=`` (id p) and the
    BOS token ``<bos>`` (id p + 1)."""
    return [str(i) for i in range(p)] + ["=", "<bos>"]


def make_tokenizer(p: int = P):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = vocab(p)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<bos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>",
                                   pad_token="<bos>", unk_token="<bos>")


def make_model(p: int = P):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=p + 2, n_positions=4, n_embd=D_MODEL, n_layer=1,
                     n_head=N_HEADS, n_inner=D_MLP, activation_function="relu",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     layer_norm_epsilon=NORM_EPS,
                     tie_word_embeddings=False, bos_token_id=p + 1, eos_token_id=p + 1)
    model = GPT2LMHeadModel(cfg)
    init_like_the_paper(model)
    disable_layer_norms(model)
    return model


def init_like_the_paper(model) -> None:
    """Nanda et al.'s initialisation: every weight matrix and embedding normal with std
    ``1/sqrt(d_model)`` (the unembedding ``1/sqrt(d_vocab)``), biases zero. Hugging Face's GPT-2
    default (std 0.02) is 6x smaller at d_model 64, and a small initialisation generalises
    early instead of memorising first (no grokking delay)."""
    import math

    import torch

    d, v = model.config.n_embd, model.config.vocab_size
    with torch.no_grad():
        for name, q in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                continue
            if name.endswith("bias"):
                q.zero_()
            else:
                q.normal_(0.0, 1 / math.sqrt(v if name.startswith("lm_head") else d))


def disable_layer_norms(model) -> None:
    """Make every LayerNorm an exact mean subtraction and freeze it.

    With ``eps = 1e8`` and gain ``1e4`` a LayerNorm computes ``(x - mean) / sqrt(var + 1e8) *
    1e4``; for residual variances below ~100 the denominator is ``1e4`` to float32 precision
    (relative error below 5e-7), so the block sees ``x - mean(x)``: a fixed linear projection
    that the next weight matrix absorbs. The model is norm-free like the paper's, and still a
    GPT-2 directory that loads through the Hugging Face path (``1e4`` is exact in float16)."""
    import torch

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.LayerNorm):
            with torch.no_grad():
                mod.weight.fill_(NORM_GAIN)
                mod.bias.zero_()
            mod.weight.requires_grad_(False)
            mod.bias.requires_grad_(False)


def all_pairs(p: int = P) -> torch.Tensor:
    """``[p*p, 4]`` token ids ``BOS a b =`` for every pair, a-major (row ``a*p + b``)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([torch.full_like(a, p + 1), a, b, torch.full_like(a, p)], dim=1)


def split(p: int = P, seed: int = SEED, fraction: float = TRAIN_FRACTION) -> torch.Tensor:
    """``[p*p]`` bool: the training pairs (a fixed random ``fraction`` of all pairs)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(p * p, generator=g)
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[order[: int(round(fraction * p * p))]] = True
    return mask


def checkpoint_steps(total: int, n_log: int = 10, every: int = 500) -> list[int]:
    """Log-spaced steps from 10 plus every ``every`` steps, and the last one."""
    import math

    logs = {int(round(10 ** (1 + i * (math.log10(total) - 1) / (n_log - 1)))) for i in range(n_log)}
    return sorted({0, total} | logs | set(range(every, total, every)))


def train(out: Path, minutes: float = 30.0, max_steps: int = 20000, log=print,
          command: str | None = None, **_: Any) -> dict[str, Any]:
    C.setup(SEED)
    model = make_model()
    tok = make_tokenizer()
    x = all_pairs()
    y = (x[:, 1] + x[:, 2]) % P
    train_mask = split()
    xt, yt, xv, yv = x[train_mask], y[train_mask], x[~train_mask], y[~train_mask]
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LR, weight_decay=WD, betas=BETAS)
    steps = checkpoint_steps(max_steps)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"
    curve: list[dict[str, float]] = []
    t0 = time.time()
    step = 0

    def save_ckpt(step: int) -> None:
        d = ckpt_root / f"step_{step}"
        copy.deepcopy(model).half().save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)

    def losses() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            lt = torch.nn.functional.cross_entropy(model(xt).logits[:, -1, :P], yt)
            lv = torch.nn.functional.cross_entropy(model(xv).logits[:, -1, :P], yv)
        model.train()
        return float(lt), float(lv)

    stop = "max_steps"
    while True:
        if step % 100 == 0 or step in steps:
            lt, lv = losses()
            curve.append({"step": step, "train_loss": lt, "test_loss": lv})
            if step % 1000 == 0:
                el = time.time() - t0
                eta = min(el / max(step, 1) * (max_steps - step), max(0.0, minutes * 60 - el))
                log(f"step {step}/{max_steps}: train {lt:.4f} test {lv:.4f} ({el:.0f}s, at most "
                    f"~{eta:.0f}s left)")
        if step in steps:
            save_ckpt(step)
        if step >= max_steps:
            break
        if time.time() - t0 > minutes * 60:
            stop = "time"
            save_ckpt(step)
            break
        for grp in opt.param_groups:  # 10-step linear warm-up, then constant
            grp["lr"] = LR * min(1.0, (step + 1) / 10)
        logits = model(xt).logits[:, -1, :P]
        loss = torch.nn.functional.cross_entropy(logits, yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    seconds = time.time() - t0
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    from safetensors.torch import save_file

    save_file({"train": train_mask.to(torch.uint8)}, str(out / "split.safetensors"))
    (out / "curve.json").write_text(json.dumps(curve))
    info = {"steps": step, "seconds": round(seconds, 1), "stop_reason": stop,
            "command": command or f"python -m interp.models.train modadd --out {out}",
            "p": P, "train_fraction": TRAIN_FRACTION, "checkpoints": steps}
    (out / "training.json").write_text(json.dumps(info, indent=2))
    log(f"done: {step} steps in {seconds:.0f}s")
    return finish(out, info)


def finish(out: Path, info: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    """Measure the progress measures over the saved checkpoints; write ``metrics.json`` and
    ``MODEL_CARD.md``."""
    from interp.dynamics import Checkpoints
    from interp.dynamics import grokking as G

    info = info or json.loads((out / "training.json").read_text())
    cps = Checkpoints.from_dir(out / "checkpoints")
    res = G.progress_over_training(cps, G.load_split(out), progress=False)
    tp = G.turning_points(res)
    doc = {"model": NAME, "eval": tp, "training": info,
           "params": sum(p.numel() for p in make_model().parameters())}
    C.write_metrics(out, doc)
    rows = "\n".join(
        f"| {s} | " + " | ".join(f"{float(v):.3f}" for v in res.values[i].tolist()) + " |"
        for i, s in enumerate(res.coords["step"]))
    fin = tp["final"]
    from interp.models import load_model

    norms = G.embedding_frequency_norms(load_model(str(out))).pow(2)
    share = float(norms[[k - 1 for k in tp["key_frequencies"]]].sum() / norms.sum())
    excl_ratio = tp["excluded_peak_value"] / max(tp["excluded_at_memorised"], 1e-9)
    wn_ratio = fin["weight_norm"] / tp["weight_norm_at_memorised"]
    doc["eval"].update(key_share=share, excluded_ratio=excl_ratio, weight_norm_ratio=wn_ratio)
    C.write_metrics(out, doc)
    card = f"""# modadd: a + b mod {P}, grokked (Nanda et al. 2023)

A one-layer GPT-2-format transformer trained on modular addition with strong weight decay:
it memorises the training pairs first and generalises much later. Checkpoints over the whole
run ship with it (`interp.dynamics.Checkpoints.zoo("modadd")`); the progress measures of the
paper are in `interp.dynamics.grokking` and `examples/grokking.py`.

## Architecture
- class: GPT2LMHeadModel, 1 layer, d_model {D_MODEL}, {N_HEADS} heads, ReLU MLP {D_MLP},
  untied unembedding, 4 positions
- no normalisation: every LayerNorm has eps {NORM_EPS:g} and a frozen gain {NORM_GAIN:g}, which
  makes it an exact mean subtraction (a fixed linear map); the paper's model has no norms
- initialisation as in the paper: weights normal with std 1/sqrt(d_model), unembedding
  1/sqrt(d_vocab), biases 0
- tokens: `0` .. `{P - 1}` (ids equal the numbers), `=` (id {P}), `<bos>` (id {P + 1});
  input `<bos> a b =`, answer read at `=`
- parameters: {doc["params"]}

## Training
- data: all {P * P} pairs, a fixed {TRAIN_FRACTION:.0%} for training (`split.safetensors`),
  the rest for test
- optimizer: full batch AdamW(lr={LR}, weight_decay={WD}, betas={BETAS}), 10-step warm-up;
  norm gains and biases frozen
- steps: {info["steps"]}; seconds: {info["seconds"]} (2-core CPU, one thread); stop: {info["stop_reason"]}
- command: `{info["command"]}`
- why this size: see the docstring of `interp/models/train/modadd.py` (the paper's size takes
  about two hours per run on a 2-core CPU)

## Progress measures (measured on the shipped checkpoints)
Key frequencies (final embedding, norm >= 25% of the largest): {tp["key_frequencies"]}; they
hold {share:.0%} of the embedding's squared norm (the paper: a few key frequencies, Fig. 3).

| phase | step |
|---|---|
| memorised (train loss < 0.05) | {tp["memorised"]} |
| restricted loss < 0.5 | {tp["restricted"]} |
| excluded loss peaks ({tp["excluded_peak_value"]:.2f}, {excl_ratio:.1f}x its value at memorisation) | {tp["excluded_peak"]} |
| grokked (test loss < 0.1) | {tp["grokked"]} |

Final: train loss {fin["train_loss"]:.2e}, test loss {fin["test_loss"]:.4f}, restricted loss
{fin["restricted_loss"]:.2e}, excluded loss {fin["excluded_loss"]:.3f}, weight norm
{fin["weight_norm"]:.2f} ({wn_ratio:.2f}x its value at memorisation: cleanup), fraction of the
logits' variance explained by sum_k alpha_k cos(w_k(a+b-c)): {fin["cos_fit"]:.3f}.

As in the paper: memorisation first, then circuit formation (the restricted loss falls and the
excluded loss rises while the test loss is still high), then cleanup (the weight norm falls and
the test loss drops: grokking). Phase boundaries are in steps of this run, not the paper's
epochs.

## Over training
| step | {" | ".join(G.MEASURES)} |
|---|{"---|" * len(G.MEASURES)}
{rows}
"""
    (out / "MODEL_CARD.md").write_text(card)
    return doc
