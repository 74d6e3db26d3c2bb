"""Shared pieces of the zoo recipes: seeding, the training loop, saving, metrics and model cards."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from interp.prompts import _language as L

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def special_token_ids() -> dict[str, int]:
    """The zoo tokenizer's vocabulary size and special ids (BOS = EOS = PAD = 0)."""
    return dict(vocab_size=len(L.build_tokenizer()), bos_token_id=0, eos_token_id=0,
                pad_token_id=0)


def llama(**shape: Any):
    """A fresh Llama-family model with the zoo's tokenizer and defaults (RoPE base 10000,
    RMSNorm eps 1e-5, no dropout); ``shape`` sets the sizes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(rope_theta=10000.0, rms_norm_eps=1e-5, attention_dropout=0.0,
                      **special_token_ids(), **shape)
    return LlamaForCausalLM(cfg)


def training_record(name: str, seed: int, out: Path, command: str | None, *, optimizer: str,
                    loss: str, info: dict[str, Any], stopping: str | None = None
                    ) -> dict[str, Any]:
    """The ``training`` section of a zoo model's metrics and card."""
    doc = {"seed": seed,
           "command": command or f"python -m interp.models.train {name} --out {out}",
           "optimizer": optimizer, "loss": loss}
    if stopping is not None:
        doc["stopping"] = stopping
    return {**doc, **info}


def record_metrics(out: Path, name: str, model, metrics: dict[str, Any],
                   training: dict[str, Any], met: bool, **extra: Any) -> dict[str, Any]:
    """Write and return a zoo model's ``metrics.json`` document."""
    doc = {"model": name, "eval": metrics, **extra, "training": training,
           "params": n_params(model), "targets_met": met}
    write_metrics(out, doc)
    return doc


def setup(seed: int, threads: int | None = None) -> None:
    torch.set_num_threads(threads or int(os.environ.get("INTERP_TRAIN_THREADS", "2")))
    torch.manual_seed(seed)
    random.seed(seed)


def lr_at(step: int, max_steps: int, lr: float, warmup: int, final_frac: float = 0.1) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def masked_lm_loss(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted next-token loss; ``weights[b, t]`` weights the prediction of ``ids[b, t]``."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
    w = weights[:, 1:]
    return (nll * w).sum() / w.sum().clamp_min(1e-8)


def train_loop(
    model: torch.nn.Module,
    batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.nn.Module, int, tuple], torch.Tensor] | None = None,
    *,
    max_steps: int,
    minutes: float,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.01,
    eval_every: int = 0,
    eval_fn: Callable[[int], bool] | None = None,
    log_every: int = 25,
    log: Callable[[str], None] = print,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """AdamW with warmup + cosine; stops at ``max_steps``, at the time budget, or when
    ``eval_fn(step)`` returns True (converged). Returns steps done and seconds taken."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.98))
    t0 = time.time()
    step = 0
    stop_reason = "max_steps"
    running = None
    model.train()
    if on_step is not None:
        on_step(0)
    while step < max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, max_steps, lr, warmup)
        batch = batch_fn(step)
        if loss_fn is None:
            ids, w = batch
            loss = masked_lm_loss(model(input_ids=ids).logits, ids, w)
        else:
            loss = loss_fn(model, step, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if on_step is not None:
            model.eval()
            on_step(step)
            model.train()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % log_every == 0:
            elapsed = time.time() - t0
            eta = min(elapsed / step * (max_steps - step), max(0.0, minutes * 60 - elapsed))
            log(f"step {step}/{max_steps} loss {running:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"t {elapsed:.0f}s, at most ~{eta:.0f}s left")
            sys.stdout.flush()
        if eval_fn is not None and eval_every and step % eval_every == 0:
            model.eval()
            done = eval_fn(step)
            model.train()
            if done:
                stop_reason = "converged"
                break
        if time.time() - t0 > minutes * 60:
            stop_reason = "time_budget"
            break
    model.eval()
    return {"steps": step, "seconds": round(time.time() - t0, 1), "stop_reason": stop_reason}


def checkpoint_saver(model, root: Path, steps: list[int]) -> Callable[[int], None]:
    """An ``on_step`` callback writing float16 copies of ``model`` (HF format, with the zoo
    tokenizer) to ``root/step_<N>`` at the given steps."""
    import copy

    wanted = set(steps)

    def save(step: int) -> None:
        if step in wanted:
            save_model(copy.deepcopy(model).half(), root / f"step_{step}")
    return save


def save_model(model, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    L.save_tokenizer(out)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")


def read_metrics(out: Path) -> dict[str, Any]:
    p = out / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def write_card(
    out: Path,
    *,
    name: str,
    title: str,
    summary: str,
    architecture: dict[str, Any],
    data: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
    targets: str,
    targets_met: bool | None = None,
) -> None:
    arch = "\n".join(f"- {k}: {v}" for k, v in architecture.items())
    train = "\n".join(f"- {k}: {v}" for k, v in training.items())
    met = "```json\n" + json.dumps(metrics, indent=2) + "\n```"
    text = f"""# {title}

{summary}

## Architecture
{arch}

## Data
{data}

## Training
{train}

## Evaluation
Measured by the recipe's own eval (`python -m interp.models.train {name} --eval-only`);
also in `metrics.json`.

Targets: {targets}

Targets met: {"yes" if targets_met else "NO (see the numbers below)" if targets_met is not None else "n/a"}

{met}

## Circuit
(filled in by the method analyses)
"""
    (out / "MODEL_CARD.md").write_text(text)


def dir_size_mb(out: Path) -> float:
    return round(sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6, 2)


def merge_stages(prior: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Training info of a run resumed (``--resume``) from a saved checkpoint."""
    keep = ("steps", "seconds", "stop_reason", "final_curriculum_max_haystack",
            "curriculum_reached_full_length_at_step", "stages")
    stages = list(prior.get("stages") or [{k: prior[k] for k in keep[:3] if k in prior}])
    stages.append({k: info[k] for k in keep[:3] if k in info})
    out = dict(info)
    out["stages"] = stages
    out["steps"] = sum(s.get("steps", 0) for s in stages)
    out["seconds"] = round(sum(s.get("seconds", 0) for s in stages), 1)
    if prior.get("curriculum_reached_full_length_at_step") and not info.get(
            "curriculum_reached_full_length_at_step"):
        out["curriculum_reached_full_length_at_step"] = prior[
            "curriculum_reached_full_length_at_step"]
    return out
