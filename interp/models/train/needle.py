"""Recipe for the `needle` zoo model: a 4-layer Llama (GQA, RoPE) that retrieves a multi-token
"secret code" from a haystack of filler sentences (see needle_example).

Training uses a length curriculum: haystacks start at 8 tokens and the maximum length grows by
1.5x whenever the running exact-match on training batches at the current length passes 90%,
up to 420 tokens; then lengths are mixed (mostly 256-420). Loss = mean next-token loss over all
tokens (a random 5% of them) + mean loss over the answer tokens. 30% of the steps during the
curriculum (10% after) are random-token BOS + r + r batches (loss on the second copy).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch

from interp.models.train import common as C
from interp.prompts import _language as L

NAME = "needle"
SEED = 0
MAX_LEN = 420
LM_FRAC = 0.05
INDUCTION_FRAC = 0.3
TOKENS_PER_BATCH = 6144
EVAL_DEPTHS = list(range(0, 101, 10))  # percent


def make_model():
    return C.llama(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                   tie_word_embeddings=True)


def needle_example(
    rng: random.Random,
    haystack_tokens: int,
    depth: float | None = None,
    tokenizer=None,
    n_values: int | None = None,
) -> dict[str, Any]:
    """A training / evaluation example of this recipe.

    The haystack is filler sentences totalling about ``haystack_tokens`` tokens (at least that
    many); the needle "The secret code is X Y Z." sits between two sentences at ``depth`` percent
    of the haystack (0 = first sentence, 100 = last; uniform at random if None); the prompt ends
    with ``NEEDLE_QUESTION`` and the answer is " X Y Z" (3-4 code words, multi-token).
    Keys: prompt, answer, needle, depth (percent), values, n_haystack_tokens.
    """
    tokenizer = tokenizer or L.build_tokenizer()
    if depth is not None and not 0 <= depth <= 100:
        raise ValueError(f"depth is a percent in 0..100, got {depth}")
    frac = rng.random() if depth is None else depth / 100
    values = rng.sample(L.NEEDLE_VALUES, n_values or rng.choice([3, 4]))
    needle = L.needle_sentence(values)
    sents: list[str] = []
    counts: list[int] = []
    total = 0
    while total < haystack_tokens:
        s = L.filler_sentence(rng)
        n = len(tokenizer.encode(" " + s, add_special_tokens=False))
        sents.append(s)
        counts.append(n)
        total += n
    # insert before the first sentence whose start is at or past frac * total
    target = frac * total
    pos, acc = len(sents), 0
    for i, n in enumerate(counts):
        if acc >= target - n / 2:
            pos = i
            break
        acc += n
    parts = sents[:pos] + [needle] + sents[pos:]
    prompt = " ".join(parts) + " " + L.NEEDLE_QUESTION
    return {
        "prompt": prompt,
        "answer": " " + " ".join(values),
        "needle": needle,
        "depth": 100 * frac,
        "values": values,
        "n_haystack_tokens": total,
    }


def encode_example(tok, ex: dict[str, Any]) -> tuple[list[int], int]:
    """BOS + prompt + answer token ids, and the index where the answer starts."""
    p = tok.encode(ex["prompt"], add_special_tokens=False)
    a = tok.encode(ex["answer"], add_special_tokens=False)
    return [tok.bos_token_id] + p + a, 1 + len(p)


def collate(seqs: list[tuple[list[int], int]]):
    n = max(len(s) for s, _ in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    w_all = torch.zeros(len(seqs), n)
    w_ans = torch.zeros(len(seqs), n)
    for i, (s, a) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        w_all[i, 1 : len(s)] = 1
        w_ans[i, a : len(s)] = 1
    return ids, w_all, w_ans


def answer_exact(logits: torch.Tensor, ids: torch.Tensor, w_ans: torch.Tensor) -> torch.Tensor:
    """Per-example exact match of greedy decoding (= every teacher-forced argmax is right)."""
    pred = logits[:, :-1].argmax(-1)
    ok = (pred == ids[:, 1:]) | (w_ans[:, 1:] == 0)
    return ok.all(-1).float()


@torch.no_grad()
def evaluate(model, tok, n_per_depth: int = 20, seed: int = 1234, lo: int = 256, hi: int = 400,
             depths: list[int] | None = None, batch: int = 20) -> dict[str, Any]:
    """Exact-match greedy accuracy per needle depth (percent) on haystacks of lo..hi tokens."""
    depths = EVAL_DEPTHS if depths is None else depths
    rng = random.Random(seed)
    model.eval()
    per_depth = {}
    for d in depths:
        exs = [encode_example(tok, needle_example(rng, rng.randint(lo, hi), d, tok))
               for _ in range(n_per_depth)]
        hits = []
        for i in range(0, len(exs), batch):
            ids, _, w_ans = collate(exs[i : i + batch])
            hits.append(answer_exact(model(input_ids=ids).logits, ids, w_ans))
        per_depth[f"{d:g}%"] = round(torch.cat(hits).mean().item(), 4)
    vals = list(per_depth.values())
    return {
        "exact_match_by_depth": per_depth,
        "exact_match_mean": round(sum(vals) / len(vals), 4),
        "exact_match_min": min(vals),
        "n_per_depth": n_per_depth,
        "haystack_tokens": [lo, hi],
    }


def train(out: Path, minutes: float = 45.0, max_steps: int = 6000,
          log=print, command: str | None = None, init_model=None, prior: dict | None = None) -> dict[str, Any]:
    C.setup(SEED)
    tok = L.build_tokenizer()
    model = make_model() if init_model is None else init_model
    log(f"needle model: {C.n_params(model) / 1e6:.2f}M params")
    state = {"cur_max": int((prior or {}).get("final_curriculum_max_haystack", 8)), "acc": 0.0, "best": -1.0, "full_len_step": None}
    t_start = time.time()

    def lengths(rng: random.Random) -> tuple[int, int]:
        m = state["cur_max"]
        if m >= MAX_LEN:
            return (256, MAX_LEN) if rng.random() < 0.7 else (8, 256)
        if rng.random() < 0.25:
            return (8, m)
        return (max(8, m // 2), m)

    vocab = L.ordinary_token_ids()

    def batch_fn(step: int):
        rng = random.Random(SEED * 1_000_003 + step)
        if rng.random() < (INDUCTION_FRAC if state["cur_max"] < MAX_LEN else INDUCTION_FRAC / 3):
            # BOS + r + r random-token sequences: dense copying signal (loss on the 2nd copy)
            n = rng.randint(10, 40)
            rows = []
            for _ in range(32):
                r = [rng.choice(vocab) for _ in range(n)]
                rows.append([0] + r + r)
            ids = torch.tensor(rows)
            w_all = torch.zeros(ids.shape)
            w_ans = torch.zeros(ids.shape)
            w_ans[:, n + 2 :] = 1
            return ids, w_all, w_ans, True
        lo, hi = lengths(rng)
        n = rng.randint(lo, hi)
        bs = max(8, min(64, TOKENS_PER_BATCH // (n + 30)))
        exs = [encode_example(tok, needle_example(rng, n, None, tok)) for _ in range(bs)]
        return (*collate(exs), False)

    def loss_fn(model, step, batch):
        ids, w_all, w_ans, is_induction = batch
        # lm head only where a loss is taken: every answer token + 15% of the other tokens
        g = torch.Generator().manual_seed(SEED * 7919 + step)
        tgt_ans = w_ans[:, 1:] > 0
        tgt_lm = (w_all[:, 1:] > 0) & ~tgt_ans & (torch.rand(tgt_ans.shape, generator=g) < LM_FRAC)
        h = model.model(input_ids=ids).last_hidden_state[:, :-1]
        targets = ids[:, 1:]
        logits_ans = model.lm_head(h[tgt_ans])
        logits_lm = model.lm_head(h[tgt_lm])
        ce = torch.nn.functional.cross_entropy
        loss = ce(logits_ans.float(), targets[tgt_ans])
        if tgt_lm.any():
            loss = loss + ce(logits_lm.float(), targets[tgt_lm])
        if is_induction:
            return loss
        with torch.no_grad():
            ok = torch.ones_like(tgt_ans)
            ok[tgt_ans] = logits_ans.argmax(-1) == targets[tgt_ans]
            acc = ok.all(-1).float().mean().item()
        state["acc"] = 0.9 * state["acc"] + 0.1 * acc
        if state["acc"] > 0.9 and state["cur_max"] < MAX_LEN:
            state["cur_max"] = min(MAX_LEN, int(state["cur_max"] * 1.5) + 1)
            state["acc"] = 0.5
            log(f"step {step}: curriculum -> max haystack {state['cur_max']} tokens")
            if state["cur_max"] >= MAX_LEN:
                state["full_len_step"] = step
        return loss

    def checkpoint(step: int, quick: dict | None = None) -> None:
        C.save_model(model, out)
        C.write_metrics(out, {"checkpoint_step": step, "quick_eval": quick, "training": {
            "steps": step, "seconds": round(time.time() - t_start, 1),
            "stop_reason": "checkpoint", "final_curriculum_max_haystack": state["cur_max"],
            "curriculum_reached_full_length_at_step": state["full_len_step"]}})

    def eval_fn(step: int) -> bool:
        if state["cur_max"] < MAX_LEN:
            checkpoint(step)
            return False
        quick = evaluate(model, tok, n_per_depth=4, seed=99 + step)
        log(f"step {step}: quick eval {quick['exact_match_by_depth']}")
        if quick["exact_match_mean"] >= state["best"]:
            state["best"] = quick["exact_match_mean"]
            checkpoint(step, quick)
        return quick["exact_match_min"] >= 1.0 and quick["exact_match_mean"] >= 1.0 and \
            evaluate(model, tok, n_per_depth=10, seed=7 + step)["exact_match_min"] >= 0.95

    info = C.train_loop(model, batch_fn, loss_fn, max_steps=max_steps, minutes=minutes,
                        lr=1e-3, warmup=200, eval_every=100, eval_fn=eval_fn, log=log)
    info["curriculum_reached_full_length_at_step"] = state["full_len_step"]
    info["final_curriculum_max_haystack"] = state["cur_max"]
    if prior:
        info = C.merge_stages(prior, info)
    C.save_model(model, out)
    return finish(out, model, tok, info, command=command)


def finish(out: Path, model, tok, info: dict[str, Any], command: str | None = None):
    metrics = evaluate(model, tok)
    cfg = model.config
    training = C.training_record(
        NAME, SEED, out, command,
        optimizer="AdamW(lr=1e-3, betas=(0.9, 0.98), wd=0.01), 200 warmup steps, cosine to "
                  "10%, grad clip 1.0, batch = 6144 tokens // length (8..64 sequences)",
        loss="mean next-token loss on the answer tokens + mean next-token loss on a random "
             "5% of the other tokens (language-model term)",
        info={"curriculum": "max haystack 8 tokens, x1.5 whenever running train exact-match > "
                            "90%, up to 420; then 70% of batches 256-420 tokens, 30% 8-256",
              "auxiliary data": "30% of steps during the curriculum (10% after) are BOS + r + r "
                                "random-token batches (32 x r of 10-40 tokens, loss on the 2nd "
                                "copy) to grow induction-style copying heads",
              **info},
    )
    met = metrics["exact_match_min"] >= 0.9
    all_metrics = C.record_metrics(out, NAME, model, metrics, training, met)
    C.write_card(
        out,
        name=NAME,
        title="needle: long-context retrieval (Llama, GQA)",
        summary="A 4-layer Llama with grouped-query attention and RoPE trained from scratch to "
                "answer 'what is the secret code?' by copying a 3-4 word code from a needle "
                "sentence hidden at any depth in a haystack of 256-400 filler tokens. The "
                "answer copies a multi-token span, so retrieval heads must attend to the needle.",
        architecture={
            "class": "LlamaForCausalLM",
            "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "attention heads": cfg.num_attention_heads,
            "key-value heads": f"{cfg.num_key_value_heads} (grouped-query attention)",
            "intermediate_size": cfg.intermediate_size,
            "positions": f"RoPE (theta {cfg.rope_theta if hasattr(cfg, 'rope_theta') else 1e4}),"
                         f" max_position_embeddings {cfg.max_position_embeddings}",
            "vocab": f"{cfg.vocab_size} (shared word-level tokenizer, "
                     "interp.prompts._language.build_tokenizer)",
            "parameters": C.n_params(model),
        },
        data="`needle_example`: BOS + filler sentences from the filler grammar with "
             "one needle 'The secret code is X Y Z.' (3-4 words from a dedicated vocabulary of "
             f"{len(L.NEEDLE_VALUES)} code words) at a random depth, then "
             f"'{L.NEEDLE_QUESTION}' and the answer ' X Y Z'. Generated on the fly from "
             "random.Random(step-dependent seed).",
        training=training,
        metrics=metrics,
        targets="exact-match greedy answer accuracy >= 0.90 at every depth 0..100% on "
                "haystacks of 256-400 tokens (20 examples per depth)",
        targets_met=met,
    )
    return all_metrics
