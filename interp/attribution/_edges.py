"""Edge attribution patching (EAP, Syed et al. 2023): see ``interp.attribution``.

Two passes: a corrupted forward recording every sender's output, and one forward and backward
on the clean input that records the clean outputs and the gradient at every receiver port (see
``interp.circuits._discover``). Families without the hooks that path needs use a clean forward
with separate residual copies for every head's q/k/v input and every MLP input
(transformer-lens's ``use_split_qkv_input`` / ``use_hook_mlp_in`` / ``use_attn_result`` flags,
switched on for the call and restored after).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from interp import components as C
from interp.metrics import MetricSpec
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
    edges (a receiver not downstream of its sender) are 0 and excluded from ``.edges``.

    The same computation as ``interp.circuits.discover(method="eap")`` (one clean and one
    corrupted forward, one backward), laid out as a sender x receiver matrix and with this
    function's sign: a score estimates ``M(clean with the edge corrupted) - M(clean)``. On
    grouped-query models a key/value edge into a query head carries only that head's use of
    the shared key/value input (the other heads of its group keep their clean output)."""
    from interp.circuits._discover import _grad_matrix, _Setup  # circuits imports this module

    model = as_model(model)
    info = describe(model)
    prepare_pairs(model, prompts, metric, "noising")  # the patching family's input checks
    L, n_h = info.n_layers, info.n_heads
    s = _Setup(model, prompts, metric, defer_clean=True)  # the gradient run is the clean run
    g = s.graph
    raw = -_grad_matrix(s, prompts, None)  # [port, sender]; corrupted - clean
    src_names = ["embed"] + C.head_labels(L, n_h) + C.mlp_labels(L)
    src_idx = ([0] + [g.sender_index(layer, h) for layer in range(L) for h in range(n_h)]
               + [g.sender_index(layer, None) for layer in range(L)])
    kinds = ("q", "k", "v")
    ports = torch.tensor([[[g.port_index(layer, k, h) for k in kinds] for h in range(n_h)]
                          for layer in range(L)], device="cpu")  # [L, H, 3]
    by_src = raw[:, src_idx].T  # [src, port]
    by_input = by_src[:, ports]  # [src, L, H, 3]
    mlp_s = by_src[:, [g.port_index(layer, "mlp") for layer in range(L)]]
    logit_s = by_src[:, g.port_index(L, "logits")]
    dst_names = C.head_labels(L, n_h) + C.mlp_labels(L) + ["logits"]
    values = torch.cat([by_input.sum(-1).reshape(len(src_names), L * n_h), mlp_s,
                        logit_s[:, None]], dim=1)
    valid = _valid(src_names, dst_names, info)
    values = values * valid
    meta = {"method": "edge_attribution", "metric": s.m.name, "sign_convention": EAP_CONVENTION,
            "valid": valid.tolist(), "clean": float(s.m_clean.mean()),
            "corrupted": float(s.m_corr.mean()),
            "qkv": "head receivers sum their q, k and v input edges; field by_input splits them"
                   + (" (GQA: a key/value edge into a query head counts only that head's use of "
                      "the shared key/value input)" if info.is_gqa else ""),
            "n_layers": L}
    return EdgeAttributionResult(values=values, dims=("src", "dst"),
                                 coords={"src": src_names, "dst": dst_names}, meta=meta,
                                 by_input=by_input.contiguous())


def _valid(src_names, dst_names, info) -> Tensor:
    """1 where the sender comes strictly before the receiver in the forward pass."""
    def depth(name: str) -> float:
        return C.depth(C.parse(name), info.n_layers, parallel_attn_mlp=info.parallel_attn_mlp)

    src_d, dst_d = [depth(s) for s in src_names], [depth(d) for d in dst_names]
    return torch.tensor([[a < b for b in dst_d] for a in src_d], dtype=torch.float32,
                        device="cpu")
