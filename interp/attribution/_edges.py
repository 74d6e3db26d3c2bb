"""Edge attribution patching (EAP, Syed et al. 2023): see ``interp.attribution``.

Three passes: a corrupted forward (sender outputs), a clean forward with separate residual
copies for every head's q/k/v input and every MLP input (transformer-lens's
``use_split_qkv_input`` / ``use_hook_mlp_in`` / ``use_attn_result`` flags, switched on for the
call and restored after), and one backward.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from interp import components as C
from interp import hooks as H
from interp._bridge import tolerance
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import as_model, describe
from interp.patching._result import prepare_pairs
from interp.results import Result

EAP_CONVENTION = ("EAP: (out_u(corrupted) - out_u(clean)) . dM/d in_v at the clean run, mean over "
                  "examples; estimates M(clean with edge u->v corrupted) - M(clean)")


@contextlib.contextmanager
def _split_mode(model):
    cfg = model.cfg
    old = {k: bool(getattr(cfg, k, False)) for k in
           ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in", "use_attn_in")}
    try:
        if old["use_attn_in"]:
            model.set_use_attn_in(False)
        try:
            model.set_use_split_qkv_input(True)
            model.set_use_attn_result(True)
            model.set_use_hook_mlp_in(True)
        except NotImplementedError as e:
            raise NotImplementedError(_unsupported(model, str(e))) from None
        yield
    finally:
        model.set_use_split_qkv_input(old["use_split_qkv_input"])
        model.set_use_attn_result(old["use_attn_result"])
        model.set_use_hook_mlp_in(old["use_hook_mlp_in"])
        if old["use_attn_in"]:
            model.set_use_attn_in(True)


def _unsupported(model, detail: str) -> str:
    family = str(getattr(model.cfg, "architecture", None) or type(model).__name__)
    attn = type(model.blocks[0].attn).__name__ if len(model.blocks) else "?"
    return (
        f"edge_attribution is not supported on {family}: EAP needs a separate input per head "
        "(q, k, v) and per MLP (transformer-lens's use_split_qkv_input and use_hook_mlp_in), "
        f"which transformer-lens does not provide for this family (attention: {attn}). It is "
        "supported where transformer-lens splits those inputs (JointQKVAttentionBridge / "
        "PositionEmbeddingsAttentionBridge: e.g. GPT-2, Pythia/NeoX, Llama, Qwen2). For this "
        "model use attribution_patching (node-level AtP) or path_patching (exact, per path). "
        f"[transformer-lens: {detail.splitlines()[0][:200]}]"
    )


@dataclass(kw_only=True)
class EdgeAttributionResult(Result):
    """``values[src, dst]`` edge scores (0 where no edge exists); ``.edges`` lists them."""

    by_input: Tensor | None = None  # [src, layer, head, 3]: q / k / v input edges separately
    value_name = "score"

    def _cell_columns(self) -> dict:
        """``valid``: whether the edge exists (the sender is upstream of the receiver)."""
        valid = self.meta.get("valid")
        return {} if valid is None else {"valid": torch.tensor(valid, device="cpu").reshape(-1).bool().numpy()}

    @property
    def edges(self) -> list[tuple[str, str, float]]:
        src, dst = self.coords["src"], self.coords["dst"]
        valid = self.meta.get("valid")
        out = []
        for i, s in enumerate(src):
            for j, d in enumerate(dst):
                if valid is None or valid[i][j]:
                    out.append((s, d, float(self.values[i, j])))
        return out

    def to_circuit(self, threshold: float | None = None, *, top_n: int | None = None,
                   absolute: bool = True):
        """Edges with |score| >= threshold, or the top_n by |score|, as a Circuit."""
        from interp.circuits._circuit import Circuit

        if threshold is None and top_n is None:
            raise ValueError("give threshold=... and/or top_n=... to select edges.")
        edges = self.edges
        if not absolute:
            edges = [e for e in edges if e[2] >= (threshold or 0.0)]
        circuit = Circuit.from_edges(edges, n_layers=int(self.meta["n_layers"]), top_n=top_n,
                                     threshold=threshold)
        circuit.meta["sign_convention"] = self.meta.get("sign_convention")
        return circuit


def edge_attribution(model, prompts, *, metric: MetricSpec = "logit_diff") -> EdgeAttributionResult:
    """EAP scores for every edge embed/head/MLP -> head (q+k+v inputs)/MLP/logits.

    ``values`` is [src, dst] (``by_input`` splits head receivers into q, k, v); impossible
    edges (a receiver not downstream of its sender) are 0 and excluded from ``.edges``."""

    model = as_model(model)
    info = describe(model)
    clean, corrupted = prepare_pairs(model, prompts, metric, "noising")
    L, n_h = info.n_layers, info.n_heads
    senders = [H.resid_pre(0)] + [H.head_result(layer) for layer in range(L)] + [
        H.mlp_out(layer) for layer in range(L)]
    recv_heads = [H.qkv_input(layer, kind) for layer in range(L) for kind in ("q", "k", "v")]
    receivers = recv_heads + [H.mlp_in(layer) for layer in range(L)] + [H.resid_post(L - 1)]
    check = [H.attn_out(layer) for layer in range(L)]
    with _split_mode(model):
        with torch.no_grad():
            _, corr_cache = model.run_with_cache(
                corrupted, names_filter=lambda n: n in set(senders) | set(check))
        acts: dict[str, Tensor] = {}

        def start(act, hook):
            act = act.detach().requires_grad_(True)
            acts[H.resid_pre(0)] = act
            return act

        def keeper(name: str):
            def keep(act, hook):
                # a fresh node: its gradient is the gradient of this hook's consumers only (the
                # MLP branch for hook_mlp_in), not of other users of the same tensor (the skip)
                act = act.clone()
                acts[name] = act
                return act
            return keep

        hooks = [(H.resid_pre(0), start)] + [(n, keeper(n)) for n in senders[1:] + receivers + check]
        with torch.enable_grad():
            logits = model.run_with_hooks(clean, fwd_hooks=hooks)
            ap = prompts.answer_pos.to(logits.device)
            m = resolve_metric(metric, clean_answer_logits=logits_at(logits, ap).detach())
            per_ex = m.from_full(logits, prompts)
            missing = [n for n in receivers if n not in acts]
            if missing:
                raise NotImplementedError(_unsupported(
                    model, f"hook points {missing[:3]} did not fire"))
            grads = torch.autograd.grad(per_ex.sum(), [acts[n] for n in receivers],
                                        allow_unused=True)
    grad = {n: (torch.zeros_like(acts[n]) if g is None else g) for n, g in zip(receivers, grads)}
    delta = {n: corr_cache[n] - acts[n].detach() for n in senders}
    for layer in range(L):  # per-head outputs must add up to the attention output
        d_sum = delta[H.head_result(layer)].sum(2)
        d_attn = corr_cache[H.attn_out(layer)] - acts[H.attn_out(layer)].detach()
        if not torch.allclose(d_sum, d_attn, atol=tolerance(model, 1e-4) * (1 + float(d_attn.abs().max()))):
            raise NotImplementedError(
                "EAP needs each head's output to add directly into the residual stream, but here "
                "the per-head results do not sum to the attention output (a norm after "
                "attention, e.g. Gemma 2's post-attention norm). Use attribution_patching "
                "(node level) or exact path_patching for this model.")
    b = clean.shape[0]
    # senders: [b, pos, n_src, d]
    src_names = ["embed"] + C.head_labels(L, n_h) + C.mlp_labels(L)
    src = torch.cat([delta[H.resid_pre(0)][:, :, None]] + [delta[H.head_result(layer)]
                    for layer in range(L)] + [delta[H.mlp_out(layer)][:, :, None]
                                              for layer in range(L)], dim=2)
    kinds = ("q", "k", "v")
    head_g = []
    for layer in range(L):
        per_kind = []
        for kind in kinds:
            g = grad[H.qkv_input(layer, kind)]
            if g.shape[2] != n_h:  # GQA: one copy per key/value head, shared by its group
                g = g.repeat_interleave(info.group_size, dim=2) / 1.0
            per_kind.append(g)
        head_g.append(torch.stack(per_kind, dim=3))  # [b, pos, H, 3, d]
    head_g = torch.stack(head_g, dim=2)  # [b, pos, L, H, 3, d]
    by_input = torch.einsum("bpsd,bplhkd->slhk", src, head_g) / b  # [src, L, H, 3]
    mlp_g = torch.stack([grad[H.mlp_in(layer)] for layer in range(L)], dim=2)  # [b, pos, L, d]
    mlp_s = torch.einsum("bpsd,bpld->sl", src, mlp_g) / b
    logit_s = torch.einsum("bpsd,bpd->s", src, grad[H.resid_post(L - 1)]) / b
    dst_names = C.head_labels(L, n_h) + C.mlp_labels(L) + ["logits"]
    values = torch.cat([by_input.sum(-1).reshape(len(src_names), L * n_h), mlp_s,
                        logit_s[:, None]], dim=1)
    valid = _valid(src_names, dst_names, info)
    values = values.detach().float().cpu() * valid
    meta = {"method": "edge_attribution", "metric": m.name, "sign_convention": EAP_CONVENTION,
            "valid": valid.tolist(), "clean": float(per_ex.detach().mean()),
            "qkv": "head receivers sum their q, k and v input edges; field by_input splits them"
                   + (" (GQA: a key/value input is shared by its query-head group; its gradient"
                      " is counted once per query head)" if info.is_gqa else ""),
            "n_layers": L}
    return EdgeAttributionResult(values=values.detach().cpu(), dims=("src", "dst"),
                                 coords={"src": src_names, "dst": dst_names}, meta=meta,
                                 by_input=by_input.detach().cpu())


def _valid(src_names, dst_names, info) -> Tensor:
    """1 where the sender comes strictly before the receiver in the forward pass."""
    def depth(name: str) -> float:
        return C.depth(C.parse(name), info.n_layers, parallel_attn_mlp=info.parallel_attn_mlp)

    src_d, dst_d = [depth(s) for s in src_names], [depth(d) for d in dst_names]
    return torch.tensor([[a < b for b in dst_d] for a in src_d], dtype=torch.float32,
                        device="cpu")
