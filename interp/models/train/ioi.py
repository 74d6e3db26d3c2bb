"""Recipe for the `ioi` zoo model: a 4-layer GPT-2 language model over IOI sentences and filler.

Data (every sequence starts with BOS; next-token loss on every token):
* 70% of sequences: one IOI sentence, BOS + a BABA or ABBA template of Wang et al. 2022 filled
  with a TRAIN name pair (languages.split_name_pairs), a random place and object, then the answer
  name and a period; a fifth of them are preceded by a filler sentence;
* 30%: two to four filler sentences from the filler grammar.
Held-out name pairs (neither order seen in training) are used only for evaluation.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from interp.models.train import common as C
from interp.prompts import _language as L

NAME = "ioi"
SEED = 0
EVAL_SEED = 2024


def make_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_positions=128,
        n_embd=128,
        n_layer=4,
        n_head=8,
        n_inner=512,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **C.special_token_ids(),
    )
    return GPT2LMHeadModel(cfg)


def training_text(rng: random.Random, pairs, with_kind: bool = False):
    if rng.random() < 0.7:
        ex = L.ioi_example(rng, pairs)
        text = ex["prompt"] + ex["answer"] + "."
        if rng.random() < 0.2:
            text = L.filler_sentence(rng) + " " + text
        return (text, True) if with_kind else text
    text = " ".join(L.filler_sentence(rng) for _ in range(rng.randint(2, 4)))
    return (text, False) if with_kind else text


def pad_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    w = torch.zeros(len(seqs), n)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        w[i, 1 : len(s)] = 1
    return ids, w


def eval_prompts(n_per_template: int = 20, seed: int = EVAL_SEED, split: str = "heldout"):
    """IOI prompts on held-out pairs: every BABA and ABBA template, n_per_template each."""
    train_pairs, held = L.split_name_pairs()
    pairs = held if split == "heldout" else train_pairs
    rng = random.Random(seed)
    exs = []
    for kind, temps in (("BABA", L.BABA_TEMPLATES), ("ABBA", L.ABBA_TEMPLATES)):
        for t, temp in enumerate(temps):
            for _ in range(n_per_template):
                io, s = rng.choice(pairs)
                exs.append({"prompt": L.ioi_text(temp, io, s, rng.choice(L.PLACES),
                                                 rng.choice(L.OBJECTS)),
                            "io": io, "s": s, "kind": kind, "template": t})
    return exs


@torch.no_grad()
def evaluate(model, tok=None, n_per_template: int = 20, seed: int = EVAL_SEED,
             split: str = "heldout") -> dict[str, Any]:
    tok = tok or L.build_tokenizer()
    exs = eval_prompts(n_per_template, seed, split)
    model.eval()
    lds = []
    for i in range(0, len(exs), 100):
        chunk = exs[i : i + 100]
        seqs = [[tok.bos_token_id] + tok.encode(e["prompt"], add_special_tokens=False)
                for e in chunk]
        ids, _ = pad_batch(seqs)
        logits = model(input_ids=ids).logits
        last = torch.tensor([len(s) - 1 for s in seqs])
        final = logits[torch.arange(len(seqs)), last]
        io = torch.tensor([tok.convert_tokens_to_ids("Ġ" + e["io"]) for e in chunk])
        s = torch.tensor([tok.convert_tokens_to_ids("Ġ" + e["s"]) for e in chunk])
        ar = torch.arange(len(seqs))
        lds.append(final[ar, io] - final[ar, s])
    ld = torch.cat(lds)
    kinds = [e["kind"] for e in exs]
    res = {
        "io_over_s_accuracy": round((ld > 0).float().mean().item(), 4),
        "mean_logit_diff": round(ld.mean().item(), 4),
        "n_prompts": len(exs),
        "split": f"{split} name pairs",
    }
    for k in ("BABA", "ABBA"):
        m = torch.tensor([x == k for x in kinds])
        res[f"accuracy_{k}"] = round((ld[m] > 0).float().mean().item(), 4)
        res[f"mean_logit_diff_{k}"] = round(ld[m].mean().item(), 4)
    res["min_template_accuracy"] = round(min(
        (ld[torch.tensor([e["template"] == t and e["kind"] == k for e in exs])] > 0)
        .float().mean().item() for t in range(15) for k in ("BABA", "ABBA")), 4)
    return res


def train(out: Path, minutes: float = 30.0, max_steps: int = 1500, batch_size: int = 48,
          log=print, command: str | None = None, init_model=None, prior: dict | None = None,
          answer_weight: float = 0.0) -> dict[str, Any]:
    C.setup(SEED)
    tok = L.build_tokenizer()
    model = make_model() if init_model is None else init_model
    train_pairs, _ = L.split_name_pairs()
    log(f"ioi model: {C.n_params(model) / 1e6:.2f}M params")

    def batch_fn(step: int):
        rng = random.Random(SEED * 1_000_003 + step + (0 if prior is None else 10_000_000))
        texts = [training_text(rng, train_pairs, with_kind=True) for _ in range(batch_size)]
        seqs = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False) for t, _ in texts]
        ids, w = pad_batch(seqs)
        if answer_weight:
            # extra weight on the answer name of IOI sentences (the token before the final '.')
            mean_len = w.sum().item() / batch_size
            for i, ((_, is_ioi), sq) in enumerate(zip(texts, seqs)):
                if is_ioi:
                    w[i, len(sq) - 2] += answer_weight * mean_len
        return ids, w

    def eval_fn(step: int) -> bool:
        m = evaluate(model, tok, n_per_template=5, seed=EVAL_SEED + step)
        log(f"step {step}: held-out acc {m['io_over_s_accuracy']} LD {m['mean_logit_diff']} "
            f"min-template acc {m['min_template_accuracy']}")
        return m["io_over_s_accuracy"] >= 0.995 and m["mean_logit_diff"] >= 5.0

    info = C.train_loop(model, batch_fn, max_steps=max_steps, minutes=minutes, lr=1e-3,
                        warmup=100, eval_every=250, eval_fn=eval_fn, log=log)
    if prior:
        info = C.merge_stages(prior, info)
    C.save_model(model, out)
    return finish(out, model, tok, info, command=command, answer_weight=answer_weight)


def finish(out: Path, model, tok, info: dict[str, Any], command: str | None = None,
           answer_weight: float = 0.0):
    metrics = evaluate(model, tok)
    metrics_train = evaluate(model, tok, n_per_template=5, split="train")
    cfg = model.config
    training = C.training_record(
        NAME, SEED, out, command,
        optimizer="AdamW(lr=1e-3, betas=(0.9, 0.98), wd=0.01), 100 warmup steps, cosine to "
                  "10%, grad clip 1.0, batch 48 sequences",
        loss="mean next-token loss on all tokens (a language model, not a classifier)",
        stopping="max steps, time budget, or converged (every 250 steps, 150 held-out "
                 "prompts: accuracy >= 0.995 and mean logit diff >= 5)",
        info=info,
    )
    if answer_weight:
        training["answer_weight"] = (
            f"{answer_weight}: the answer-name token of each IOI sentence gets an extra loss "
            f"weight of {answer_weight} x (mean tokens per sequence), on top of the plain "
            "next-token loss on every token")
    met = metrics["io_over_s_accuracy"] >= 0.95 and metrics["mean_logit_diff"] >= 3
    all_metrics = C.record_metrics(out, NAME, model, metrics, training, met,
                                   eval_train_pairs=metrics_train)
    C.write_card(
        out,
        name=NAME,
        title="ioi: indirect-object identification (GPT-2)",
        summary="A 4-layer GPT-2 language model trained from scratch on IOI sentences (the 15 "
                "BABA and 15 ABBA templates of Wang et al. 2022) mixed with filler sentences. "
                "Evaluated on name pairs never seen in training: at 'X gave a ring to' it "
                "must prefer the indirect object (the name that is not repeated) over the "
                "subject.",
        architecture={
            "class": "GPT2LMHeadModel",
            "layers": cfg.n_layer,
            "d_model": cfg.n_embd,
            "heads": cfg.n_head,
            "d_mlp": cfg.n_inner,
            "positions": f"learned, n_positions {cfg.n_positions}",
            "vocab": f"{cfg.vocab_size} (shared word-level tokenizer, "
                     "interp.prompts._language.build_tokenizer)",
            "parameters": C.n_params(model),
        },
        data=__doc__.split("Data", 1)[1].split(":", 1)[1].strip()
        + f"\n\n{len(L.NAMES)} names; {len(L.split_name_pairs()[0])} ordered train pairs, "
          f"{len(L.split_name_pairs()[1])} held-out ordered pairs (split seed 0, 20%).",
        training=training,
        metrics=metrics,
        targets="on held-out name pairs (600 prompts: 15 BABA + 15 ABBA templates x 20), "
                "IO-over-S accuracy (logit[IO] > logit[S] at the last position) >= 0.95 and "
                "mean logit difference >= 3",
        targets_met=met,
    )
    return all_metrics
