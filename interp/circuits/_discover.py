"""Edge scores for circuit discovery: EAP, EAP-IG (inputs / activations), clean-corrupted and
exact edge patching.

Sign convention (all methods): ``score(u -> p) = M(clean) - M(clean with edge u -> p corrupted)``
for a metric where higher is better (the sign flips for ``loss``/``kl``), mean over examples. A
positive score means the edge helps the task: corrupting it lowers the metric.

Edge intervention. Every receiver port gets its own copy of the residual stream. Corrupting edge
``u -> p`` gives port ``p`` the input ``resid - (out_u(clean) - out_u(corrupted))``: the sender's
clean contribution swapped for its corrupted one, on that port only. Ports are transformer-lens's
per-head ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` (``use_split_qkv_input``), the
per-head outputs ``hook_result`` (``use_attn_result``), and ``hook_mlp_in``.

Grouped-query attention. The model computes one key/value input per *key/value* head, but the
graph has k/v ports per *query* head. The forward therefore runs ``group_size`` copies of the
batch: in copy ``c`` the key/value head ``g`` reads the port input of query head
``g * group_size + c``, and after attention each query head's ``z`` is taken from its own copy
(and written to every copy), so all copies carry the same residual stream again. A k/v edge into
one query head thus never reaches the other heads of its group.

Methods:

- ``"eap"`` (Syed et al. 2023): ``(out_u(clean) - out_u(corr)) · dM/d in_p`` at the clean run,
  summed over positions and features. 1 corrupted forward, then 1 forward+backward on the
  clean input that also records the clean sender outputs.
- ``"eap-ig-inputs"`` (Hanna et al. 2024): the gradient is averaged over ``m`` runs whose input
  embeddings are ``e_corr + (k/m)(e_clean - e_corr)``, ``k = 1..m`` (the paper's grid).
- ``"eap-ig-activations"`` (Hanna et al. 2024; MIB): one component at a time (the input, each
  attention layer's output, each MLP's output: ``2L + 1`` of them) has its output set to
  ``corr + (k/m)(clean - corr)`` on the clean input, ``k = 1..m``; the gradient at every port is
  averaged over all ``(2L + 1) m`` runs, as in the EAP-IG reference code.
- ``"clean-corrupted"``: the gradient averaged over two runs, the clean and the corrupted input.
- ``"exact"``: each edge patched on its own, one metric per edge; all (edge, example) pairs are
  stacked into large batches.
- ``"exact-reference"``: the same numbers from one ``run_with_hooks`` forward per edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks as H
from interp._bridge import check_finite_grads, drop_graph_state, tolerance
from interp._engine.restart import Restarter, default_budget
from interp.attribution._edges import _split_mode
from interp.circuits._graph import KINDS, Graph
from interp.metrics import MetricSpec, logits_at, resolve_metric
from interp.models import describe
from interp.prompts import PromptSet

Method = Literal["eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted", "exact",
                 "acdc", "exact-reference"]
GRADIENT_METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted")
SIGN_CONVENTION = ("score(u->p) = M(clean) - M(clean with edge u->p corrupted), mean over "
                   "examples (negated for metrics where lower is better): positive = the edge "
                   "helps the task")


# --- checks ---------------------------------------------------------------------------------
def check_inputs(model, prompts: PromptSet) -> tuple[Tensor, Tensor]:
    """Clean and corrupted tokens on the model's device, after the checks every method needs."""
    if not isinstance(prompts, PromptSet):
        raise TypeError("prompts must be a PromptSet with corrupted prompts (e.g. "
                        "interp.prompts.ioi(model, 8) or PromptSet.from_pairs(...)).")
    clean, corr = prompts.clean_tokens, prompts.require_corrupted()
    if clean.shape != corr.shape:
        raise ValueError(
            f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corr.shape)} differ "
            "in length. Edge patching and EAP-IG swap sender outputs position by position, so "
            "each clean prompt and its corruption must have the same token count: use a "
            "corruption of equal length (e.g. replace one-token names by other one-token names).")
    info = describe(model)
    missing = [n for n in (H.resid_pre(0), H.mlp_out(0), H.resid_post(info.n_layers - 1))
               if n not in info.hooks]
    if missing:
        raise NotImplementedError(f"{info.architecture}: hook points {missing} do not fire, so "
                                  "edge-level circuits are not supported for this model.")
    prompts.check(model)
    return clean.to(model.cfg.device), corr.to(model.cfg.device)


# --- the per-port forward -------------------------------------------------------------------
Patch = Callable[[int, int, Float[Tensor, "batch pos port d_model"]], Tensor]


class PortForward:
    """Forward passes in which each receiver port's input passes through
    ``patch(first_port, layer, x)`` (``x``: that group's port inputs, ``[batch, pos, n, d_model]``
    per query head; ``first_port``: global index of ``x[:, :, 0]``). Sender outputs of the last
    run are kept in ``self.out[(layer, "a" | "m")]`` (and ``self.out[(-1, "i")]``, the input)."""

    def __init__(self, model, graph: Graph) -> None:
        self.model, self.g = model, graph
        info = describe(model)
        self.gs, self.n_kv = info.group_size, info.n_kv_heads
        self.out: dict[tuple[int, str], Tensor] = {}
        self.final: Tensor | None = None  # the final residual of the last run (unpatched)

    def sent(self) -> Tensor:
        """``[batch, pos, sender, d_model]`` sender outputs of the last full run."""
        parts = [self.out[(-1, "i")]]
        for layer in range(self.g.n_layers):
            parts += [self.out[(layer, "a")], self.out[(layer, "m")]]
        return torch.cat(parts, dim=2)

    def hooks(self, R: int, patch: Patch | None, *, start: int = 0,
              input_value: Tensor | None = None) -> list[tuple[str, Callable]]:
        """Hooks for a forward of ``group_size * R`` rows (``group_size`` copies of ``R``,
        copy-major) from block ``start`` on."""
        g, gs = self.g, self.gs
        L, nh, nkv = g.n_layers, g.n_heads, self.n_kv
        self.out = {}
        patch = patch or (lambda p0, layer, x: x)

        def rep(x: Tensor) -> Tensor:
            return x if gs == 1 else x.repeat(gs, *([1] * (x.ndim - 1)))

        def embed(x, hook):
            if input_value is not None:
                x = rep(input_value.to(x.dtype)).detach().requires_grad_(torch.is_grad_enabled())
            self.out[(-1, "i")] = x[:R, :, None]
            return x

        def qkv(layer: int, kind: str):
            p0 = g.port_index(layer, kind, 0)

            def fn(x, hook):
                if kind == "q" or gs == 1:
                    return rep(patch(p0, layer, x[:R]))
                S, D = x.shape[1], x.shape[-1]
                per_q = x.view(gs, R, S, nkv, D).permute(1, 2, 3, 0, 4).reshape(R, S, nh, D)
                out = patch(p0, layer, per_q)
                return out.view(R, S, nkv, gs, D).permute(3, 0, 1, 2, 4).reshape(gs * R, S, nkv, D)
            return fn

        copy_of = torch.arange(nh, device="cpu") % gs

        def splice(z, hook):  # each query head's z from its own copy, to every copy
            zv = z.view(gs, R, *z.shape[1:])
            own = zv[copy_of.to(z.device), :, :, torch.arange(nh, device=z.device)]
            return rep(own.permute(1, 2, 0, 3))

        def keep(layer: int, key: str):
            def fn(x, hook):
                self.out[(layer, key)] = x[:R] if key == "a" else x[:R, :, None]
                return x
            return fn

        def single(p0: int, layer: int):
            def fn(x, hook):
                return rep(patch(p0, layer, x[:R, :, None])[:, :, 0])
            return fn

        hooks: list[tuple[str, Callable]] = [(H.resid_pre(0), embed)] if start == 0 else []
        for layer in range(start, L):
            hooks += [(H.qkv_input(layer, k), qkv(layer, k)) for k in KINDS]
            if gs > 1:
                hooks.append((H.z(layer), splice))
            hooks.append((H.head_result(layer), keep(layer, "a")))
            hooks.append((H.mlp_in(layer), single(g.port_index(layer, "mlp"), layer)))
            hooks.append((H.mlp_out(layer), keep(layer, "m")))
        to_logits = single(g.port_index(L, "logits"), L)

        def final(x, hook):
            self.final = x[:R].detach()
            return to_logits(x, hook)
        hooks.append((H.resid_post(L - 1), final))
        return hooks

    def run(self, tokens: Tensor, patch: Patch | None = None,
            input_value: Tensor | None = None, extra: list | None = None
            ) -> Float[Tensor, "batch pos d_vocab"]:
        R = tokens.shape[0]
        hooks = self.hooks(R, patch, input_value=input_value) + list(extra or [])
        toks = tokens if self.gs == 1 else tokens.repeat(self.gs, 1)
        with _split_mode(self.model):
            logits = self.model.run_with_hooks(toks, fwd_hooks=hooks)
        if len(self.out) != 1 + 2 * self.g.n_layers:
            raise NotImplementedError(
                "the per-head hook points (split q/k/v inputs, per-head results, MLP input) did "
                f"not all fire on {describe(self.model).architecture}; edge-level discovery needs "
                "them. Use interp.attribution.attribution_patching (node level) instead.")
        return logits[:R]


def _metric(model, prompts: PromptSet, metric: MetricSpec, clean_logits: Tensor | None):
    ref = None if clean_logits is None else logits_at(clean_logits, prompts.answer_pos).detach()
    m = resolve_metric(metric, clean_answer_logits=ref)
    return m, (1.0 if m.higher_is_better else -1.0)


def _rows(prompts: PromptSet, idx: Tensor) -> PromptSet:
    """The prompts of examples ``idx`` (repeats allowed), tensors only."""
    idx = idx.cpu()
    def pick(t):
        return None if t is None else t[idx]
    return PromptSet(clean_tokens=prompts.clean_tokens[idx], answer_ids=prompts.answer_ids[idx],
                     answer_pos=prompts.answer_pos[idx],
                     corrupted_tokens=pick(prompts.corrupted_tokens),
                     wrong_ids=pick(prompts.wrong_ids), pad_id=prompts.pad_id)


def _row_metric(m, sub: PromptSet, metric: MetricSpec, rows_b: Tensor | None,
                clean_ref: Tensor, logits: Tensor) -> Tensor:
    """The metric of rows whose prompts are ``sub`` (example ``rows_b`` of the set)."""
    if metric == "kl":
        if rows_b is None:
            rows_b = torch.arange(len(sub), device=clean_ref.device) % clean_ref.shape[0]
        m = resolve_metric("kl", clean_answer_logits=clean_ref[rows_b.to(clean_ref.device)])
    return m.from_full(logits, sub)


def _sender_names(g: Graph, per_head: str) -> list[str]:
    L = g.n_layers
    head = H.z if per_head == "z" else H.head_result
    names = [H.resid_pre(0), H.resid_post(L - 1)]
    for layer in range(L):
        names += [head(layer), H.mlp_out(layer)]
    return names


def _stack_senders(model, g: Graph, got: dict[str, Tensor], per_head: str) -> Tensor | None:
    """``[sender, batch, pos, d_model]`` sender outputs from recorded activations ``got``: the
    input embedding, each head's output (``z_h @ W_O[h]`` from ``hook_z``, or transformer-lens's
    per-head ``hook_result``) and each MLP's output; None when a hook point is missing or has an
    unexpected shape."""
    L, nh = g.n_layers, g.n_heads
    if any(n not in got for n in _sender_names(g, per_head)):
        return None
    emb = got[H.resid_pre(0)]
    b, pos, d = emb.shape
    out = torch.empty(len(g.senders), b, pos, d, dtype=emb.dtype, device=emb.device)
    out[0] = emb
    i = 1
    for layer in range(L):
        if per_head == "z":
            z = got[H.z(layer)].detach()
            W_O = model.blocks[layer].attn.W_O.detach()  # [head, d_head, d_model]
            if z.ndim != 4 or z.shape[2] != nh or tuple(W_O.shape[:2]) != tuple(z.shape[2:]):
                return None
            torch.bmm(z.permute(2, 0, 1, 3).reshape(nh, b * pos, -1).to(W_O.dtype), W_O,
                      out=out[i:i + nh].view(nh, b * pos, d))
        else:
            r = got[H.head_result(layer)]
            if r.ndim != 4 or r.shape[2] != nh:
                return None
            out[i:i + nh] = r.permute(2, 0, 1, 3)
        out[i + nh] = got[H.mlp_out(layer)]
        i += nh + 1
    return out


def _sender_outputs(model, tokens: Tensor, g: Graph, per_head: str = "z"):
    """``(logits, [sender, batch, pos, d_model] sender outputs, final residual)`` from one
    forward (no per-port residual copies); None where the hook points do not all fire."""
    names = _sender_names(g, per_head)
    old = bool(getattr(model.cfg, "use_attn_result", False))
    try:
        if per_head == "result":
            model.set_use_attn_result(True)
        logits, cache = model.run_with_cache(tokens, names_filter=names)
    except NotImplementedError:
        return None
    finally:
        if per_head == "result":
            model.set_use_attn_result(old)
    sent = _stack_senders(model, g, dict(cache.items()), per_head)
    return None if sent is None else (logits, sent, cache[H.resid_post(g.n_layers - 1)])


class _Setup:
    """Clean and corrupted runs: sender outputs, metrics, the decomposition check.

    ``defer_clean``: run only the corrupted forward now; the clean one is recorded by the first
    gradient run on the clean input (:meth:`finish`), or run by :meth:`ensure_clean`."""

    def __init__(self, model, prompts: PromptSet, metric: MetricSpec, *,
                 defer_clean: bool = False) -> None:
        self.clean, self.corr = check_inputs(model, prompts)
        self.graph = Graph.from_model(model)
        self.fw = PortForward(model, self.graph)
        self.prompts, self.metric, self.model = prompts, metric, model
        with _split_mode(model):  # a family without per-port inputs is refused here, clearly
            pass
        self.per_head = "z"
        self._corrupted = self._forward(self.corr)
        self.pending = True
        if not defer_clean:
            self.ensure_clean()

    def _forward(self, tokens: Tensor):
        with torch.no_grad():
            got = _sender_outputs(self.model, tokens, self.graph, self.per_head)
            if got is None and self.per_head == "z":
                self.per_head = "result"
                got = _sender_outputs(self.model, tokens, self.graph, "result")
            if got is None:  # the per-port forward records them too (slower)
                self.per_head = "ports"
                logits = self.fw.run(tokens)
                got = logits, self.fw.sent().permute(2, 0, 1, 3).contiguous(), self.fw.final
                self.fw.out = {}
        return got

    def ensure_clean(self) -> None:
        """Run the clean forward unless a gradient run has recorded it."""
        if self.pending:
            self.finish(*self._forward(self.clean))

    def finish(self, logits_c: Tensor, C: Tensor, fin_c: Tensor) -> None:
        """Complete the setup from the clean run's logits, ``[sender, b, pos, d]`` outputs and
        final residual (``C`` is consumed: it becomes the sender deltas)."""
        prompts = self.prompts
        logits_z, Z, fin_z = self._corrupted
        try:
            self._check_sum(self.model, fin_c - C.sum(0), fin_z - Z.sum(0), fin_c)
        except NotImplementedError:
            if self.per_head != "z":
                raise
            self.per_head = "result"  # the z @ W_O decomposition did not add up: use the
            self._corrupted = self._forward(self.corr)  # per-head results of the model
            self.finish(*self._forward(self.clean))
            return
        self.m, self.sign = _metric(self.model, prompts, self.metric, logits_c)
        self.clean_ref = logits_at(logits_c, prompts.answer_pos).detach()
        self.m_clean = self.m.from_full(logits_c, prompts).detach()
        self.m_corr = self.m.from_full(logits_z, prompts).detach()
        # the embedding inputs (EAP-IG interpolates them) and the sender deltas, stored
        # sender-major so that one sender prefix is one contiguous matrix
        self.inputs = (C[0].clone(), Z[0].clone())
        C -= Z
        self.delta = C.permute(1, 2, 0, 3)  # [b, pos, u, d]
        self._corrupted = None
        self.pending = False

    @staticmethod
    def _check_sum(model, rest_c: Tensor, rest_z: Tensor, final: Tensor) -> None:
        """The final residual must be the sum of the sender outputs (up to a part that does
        not depend on the input, e.g. biases), else edges cannot be patched through it."""
        rest = rest_c - rest_z
        scale = 1.0 + float(final.abs().max())
        if float(rest.abs().max()) > tolerance(model, 1e-4) * scale:
            raise NotImplementedError(
                f"{describe(model).architecture}: the final residual stream is not the sum of "
                "the embedding, per-head outputs and MLP outputs (e.g. a norm after attention, "
                "as in Gemma 2), so edges cannot be patched through the residual stream. Use "
                "interp.attribution.attribution_patching or interp.patching.path_patching.")


# --- gradient methods -----------------------------------------------------------------------
#: One gradient run: ``(alpha, component)``. ``component`` None: the input embeddings are
#: ``corrupted + alpha (clean - corrupted)`` (``alpha`` None: the clean run itself);
#: ``("a", l)`` / ``("m", l)``: attention layer ``l``'s / MLP ``l``'s output is replaced by that
#: interpolation of its clean and corrupted outputs (everything else runs on the clean input).
Run = tuple[float | None, tuple[str, int] | None]


def _runs(method: str, ig_steps: int, n_layers: int) -> list[Run]:
    """The gradient runs of a gradient method (see :data:`Run`)."""
    if method == "eap":
        return [(None, None)]
    if method == "clean-corrupted":
        return [(1.0, None), (0.0, None)]
    alphas = [k / ig_steps for k in range(1, ig_steps + 1)]
    if method == "eap-ig-inputs":
        return [(a, None) for a in alphas]
    comps: list[tuple[str, int] | None] = [None]
    for layer in range(n_layers):
        comps += [("a", layer), ("m", layer)]
    return [(a, c) for c in comps for a in alphas]  # eap-ig-activations


def _component_hook(comp: tuple[str, int]) -> str:
    """The output hook of an interpolated component (``("a", l)`` / ``("m", l)``)."""
    return H.attn_out(comp[1]) if comp[0] == "a" else H.mlp_out(comp[1])


def _component_outputs(s: _Setup, runs: Sequence[Run]) -> dict[tuple[str, int], tuple[Tensor, Tensor]]:
    """Clean and corrupted outputs of the attention layers / MLPs the runs interpolate."""
    comps = sorted({c for _, c in runs if c is not None})
    if not comps:
        return {}
    names = {c: _component_hook(c) for c in comps}
    model = s.fw.model
    with torch.no_grad():
        _, cc = model.run_with_cache(s.clean, names_filter=list(names.values()))
        _, cz = model.run_with_cache(s.corr, names_filter=list(names.values()))
    missing = [n for n in names.values() if n not in cc]
    if missing:
        raise NotImplementedError(f"{describe(model).architecture}: the hook points {missing} do "
                                  "not fire, so their outputs cannot be interpolated; use "
                                  "method='eap-ig-inputs'.")
    return {c: (cc[n], cz[n]) for c, n in names.items()}


def _interp_hooks(run: Run, outs: dict, rows: slice = slice(None)) -> list[tuple[str, Callable]]:
    """The hook replacing the interpolated component's output (none for input runs)."""
    a, comp = run
    if comp is None:
        return []
    clean, corr = outs[comp]
    value = (corr + a * (clean - corr))[rows]
    name = _component_hook(comp)

    def fn(x, hook):
        v = value.to(x.dtype)
        if v.shape[0] != x.shape[0]:  # grouped-query copies of the rows
            v = v.repeat(x.shape[0] // v.shape[0], *([1] * (v.ndim - 1)))
        return v
    return [(name, fn)]


def _grad_matrix(s: _Setup, prompts: PromptSet, runs: Sequence[Run] | None) -> Tensor:
    """``[port, sender]``: ``(out_u(clean) - out_u(corrupted)) . dM/d in_p``, mean over
    examples and over the gradient ``runs`` (see :data:`Run`; None: the clean run only); 0 where
    no edge exists. Each run's gradients are reduced to this matrix before the next run. On a
    grouped-query model every run holds ``group_size`` copies of its rows (one per query head
    of a group), so the examples go in chunks of about ``batch / group_size``: the memory of one
    plain batch, the time of ``group_size`` of them."""
    runs = [(None, None)] if runs is None else list(runs)
    outs = _component_outputs(s, runs)
    fast = _grad_matrix_fast(s, prompts, runs, outs)
    if fast is not None:
        return fast
    s.ensure_clean()
    g, B = s.graph, s.clean.shape[0]
    P, U = len(g.ports), len(g.senders)
    full = torch.zeros(P, U, device="cpu")
    n_src = torch.bincount(g.edge_dst, minlength=P)  # a port's senders are a prefix of them
    d_all = s.delta.permute(2, 0, 1, 3)  # [sender, b, pos, d]: contiguous (see _Setup)
    c0, z0 = s.inputs
    step = max(1, -(-B // s.fw.gs))
    for lo in range(0, B, step):
        hi = min(B, lo + step)
        rows = torch.arange(lo, hi, device=s.clean.device)
        sub = prompts if (lo, hi) == (0, B) else _rows(prompts, rows)
        d_t = d_all[:, lo:hi].reshape(U, -1)
        for a, comp in runs:
            kept: list[tuple[int, Tensor]] = []

            def record(p0, layer, x, kept=kept):
                x = x.clone()
                kept.append((p0, x))
                return x

            inp = None if a is None or comp is not None else (z0 + a * (c0 - z0))[lo:hi]
            extra = _interp_hooks((a, comp), outs, slice(lo, hi))
            with torch.enable_grad():
                logits = s.fw.run(s.clean[lo:hi], record, input_value=inp, extra=extra)
                drop_graph_state(s.fw.model)
                val = _row_metric(s.m, sub, s.metric, rows, s.clean_ref, logits).sum()
                grads = torch.autograd.grad(val, [x for _, x in kept], allow_unused=True)
                check_finite_grads(grads, "edge attribution")
            del logits, val
            for (p0, x), gr in zip(kept, grads):
                if gr is None:
                    continue
                n_u, n = int(n_src[p0]), gr.shape[2]
                g_t = gr.permute(2, 0, 1, 3).reshape(n, -1)  # [port, rows * pos * d]
                full[p0:p0 + n, :n_u] += (g_t @ d_t[:n_u].T).float().cpu() / (B * len(runs))
            del kept, grads
    return full


def _shared_kv_shares(model, st: dict, gr: dict) -> tuple[Tensor, Tensor] | None:
    """Each query head's share of the gradient of its group's shared key and value.

    A key/value head ``j`` is read by the query heads ``h`` of its group; the gradient of its
    key / value is the sum of what flows back through each of them: ``dv_h = A_h^T dz_h`` and
    ``d rot_k_h = c * dS_h^T rot_q_h`` (``A``: pattern, ``dS``: the gradient of the attention
    scores, ``c``: the score scale fitted from the forward values), then back through the rotary
    map. Returns ``(dk, dv)``, each ``[b, pos, head, d_head]`` per query head, or None when they
    cannot be formed (the caller's sum check catches any other mismatch)."""
    info = describe(model)
    kvh = torch.tensor([info.kv_head(h) for h in range(info.n_heads)], device=gr["z"].device)
    if "pattern" not in st or "scores" not in gr or "rot_q" not in st or "rot_k" not in st:
        return None
    A, dS, dz = st["pattern"].detach(), gr["scores"], gr["z"]
    rq, rk = st["rot_q"].detach(), st["rot_k"].detach()  # [b, pos, head(kv), d_head]
    scores = st["scores"].detach()
    raw = torch.einsum("bqhe,bkhe->bhqk", rq, rk[:, :, kvh])
    keep = torch.isfinite(scores) & (A > 0)
    num = (scores * raw)[keep].double().sum()
    den = (raw * raw)[keep].double().sum()
    if not bool(keep.any()) or float(den) == 0:
        return None
    c = float(num / den)
    d_rk = c * torch.einsum("bhqk,bqhe->bkhe", dS, rq)  # [b, pos_k, head, d_head]
    if "cos" in st:  # rot = k cos + rotate_half(k) sin, so dk = d cos + rotate_half^T(d sin)
        cos, sin = st["cos"].detach()[:, :, None], st["sin"].detach()[:, :, None]
        t = d_rk * sin
        half = t.shape[-1] // 2
        d_k = d_rk * cos + torch.cat([t[..., half:], -t[..., :half]], dim=-1)
    else:
        d_k = d_rk
    return d_k, torch.einsum("bhqk,bqhe->bkhe", A, dz)


def _norm_form(norm) -> tuple[bool, float, Tensor | None] | None:
    """``(centred, eps, effective weight)`` of a LayerNorm or RMSNorm (Gemma's ``1 + weight``
    too); None for any other norm."""
    mod = getattr(norm, "original_component", None) or norm
    name = type(mod).__name__
    if isinstance(mod, torch.nn.LayerNorm) or name in ("LayerNorm", "LayerNormPre"):
        center, eps = True, getattr(mod, "eps", None)
    elif name.endswith("RMSNorm") or name == "RMSNormPre":
        center, eps = False, getattr(mod, "variance_epsilon", getattr(mod, "eps", None))
    else:
        return None
    if not isinstance(eps, (int, float)):
        return None
    w = getattr(mod, "weight", None)
    if isinstance(w, Tensor):
        w = w.detach().float()
        w = 1.0 + w if name.startswith("Gemma") else w
    else:
        w = None
    return center, float(eps), w


def _port_input_grads(norm, x: Tensor, parts: Sequence[tuple[Tensor, Tensor]]) -> Tensor | None:
    """The gradient at the residual input of every port of a layer, ``[port, b, pos, d]``.

    ``parts``: ``(d_out [b, pos, n, e], W [n, d, e])`` per port kind, the gradient at each
    port's query / key / value and its weights; the port's input gradient is
    ``(d_out @ W^T) @ d norm(x) / dx``. In closed form for LayerNorm / RMSNorm, with the norm's
    Jacobian folded into the weights: for ``xhat = (x - mean) * rstd`` the Jacobian transpose
    maps ``y`` to ``rstd * (y w - mean(y w) - xhat mean(y w xhat))``, so ``d_out`` is scaled by
    ``rstd``, the weights by ``w`` and centred over ``d`` (LayerNorm), and one rank-one term is
    subtracted. Computed in float32. None for any other norm."""
    form = _norm_form(norm)
    if form is None:
        return None
    center, eps, w = form
    x32 = x.float()
    if center:
        x32 = x32 - x32.mean(-1, keepdim=True)
    rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # [b, pos, 1]
    xhat = x32 * rstd
    b, pos, d = x.shape
    out = torch.empty(sum(W.shape[0] for _, W in parts), b, pos, d, device=x.device)
    i = 0
    for d_out, W in parts:
        n = W.shape[0]
        Wf = W.float() if w is None else W.float() * w[None, :, None]
        if center:
            Wf = Wf - Wf.mean(1, keepdim=True)
        ds = (d_out.float() * rstd[..., None]).permute(2, 0, 1, 3).reshape(n, b * pos, -1)
        torch.bmm(ds, Wf.transpose(1, 2), out=out[i:i + n].view(n, b * pos, d))
        xw = torch.bmm(xhat.reshape(1, b * pos, d).expand(n, -1, -1), Wf)  # [n, b*pos, e]
        proj = (ds * xw).sum(-1) / d  # mean over d of (rows of y w) * xhat
        out[i:i + n].view(n, b * pos, d).addcmul_(proj[..., None], xhat.reshape(1, b * pos, d),
                                                  value=-1.0)
        i += n
    return out.to(x.dtype)


def _port_input_grads_autograd(norm, x: Tensor, parts: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """:func:`_port_input_grads` for any norm: one autograd step through ``norm`` per port kind
    (slower: the norm runs on a copy of ``x`` per port)."""
    out = []
    for d_out, W in parts:
        dy = torch.einsum("bshe,hde->bshd", d_out.to(W.dtype), W)
        xr = x[:, :, None].expand(-1, -1, W.shape[0], -1).clone().requires_grad_(True)
        with torch.enable_grad():
            y = norm(xr)
        out.append(torch.autograd.grad(y, xr, grad_outputs=dy.to(y.dtype))[0].permute(2, 0, 1, 3))
        del xr, y, dy
    return torch.cat(out, dim=0)


def _grad_matrix_fast(s: _Setup, prompts: PromptSet, runs: Sequence[Run] | None,
                      outs: dict | None = None) -> Tensor | None:
    """:func:`_grad_matrix` from one plain forward and backward per run, without a residual
    copy per port: the gradients of each head's query / key / value (per query head on GQA
    models, see :func:`_shared_kv_shares`) are taken back to the head's residual input through
    ``W·norm(x)`` (in closed form, :func:`_port_input_grads`; a local autograd step for other
    norms), and the MLP and logits ports read the gradient at their norm's input. Every layer
    is checked: the ports' input gradients must add up to the gradient the attention branch
    receives (``ln1``'s input); else None (the caller falls back to the split-input forward).
    When the setup defers its clean forward (EAP), the clean-input run records the clean sender
    outputs on the way."""
    model, g, B = s.fw.model, s.graph, s.clean.shape[0]
    info = describe(model)
    L, nh = g.n_layers, g.n_heads
    gqa = info.is_gqa
    rotary = info.positional == "rotary"
    pre = [f"blocks.{layer}." for layer in range(L)]
    need = [pre[0] + "ln1.hook_in", pre[0] + "ln2.hook_in", H.q(0), H.k(0), H.v(0)]
    if gqa:
        need += [H.attn_scores(0), H.pattern(0), H.z(0)]
        need += [H.rot_q(0), H.rot_k(0), pre[0] + "attn.hook_cos"] if rotary else []
        if info.positional not in ("rotary", "standard"):
            return None
    # ALiBi (Bloom): the per-head query/key/value hooks do not line up with the per-head
    # weights there (the exact method is refused for the same reason); use the split forward
    if not all(n in info.hooks for n in need) or info.positional == "alibi":
        return None
    P, U = len(g.ports), len(g.senders)
    runs = [(None, None)] if runs is None else list(runs)
    outs = _component_outputs(s, runs) if outs is None else outs
    # the clean run's sender outputs are recorded by this function's clean-input run
    record = s.pending and runs == [(None, None)] and s.per_head == "z"
    if s.pending and not record:
        s.ensure_clean()
    full = torch.zeros(P, U, device="cpu")
    n_src = torch.bincount(g.edge_dst, minlength=P)
    tol = max(tolerance(model, 1e-4), 1e-3)
    kvh = [info.kv_head(h) for h in range(nh)]
    for a, comp in runs:
        st: list[dict[str, Tensor]] = [{} for _ in range(L + 1)]
        leaves: list[tuple[int, str, Tensor]] = []

        def grab(layer, key, leaf):
            def fn(x, hook):
                if leaf:
                    x = x.clone()
                    leaves.append((layer, key, x))
                st[layer][key] = x
                return x
            return fn

        seen: dict[str, Tensor] = {}  # the clean run's sender outputs, when recorded

        def embed(x, hook, a=a, comp=comp):
            if a is not None and comp is None:
                c0, z0 = s.inputs
                x = (z0 + a * (c0 - z0)).to(x.dtype)
            elif record:
                seen[H.resid_pre(0)] = x.detach()
            return x.detach().requires_grad_(True)

        def see(name):  # keyed by the name asked for (hook.name may be an alias's target)
            def fn(x, hook):
                seen[name] = x.detach()
                return x
            return fn

        hooks = [(H.resid_pre(0), embed)] + _interp_hooks((a, comp), outs)
        if record:
            hooks += [(n, see(n)) for n in _sender_names(g, "z")[1:]]
        for layer in range(L):
            hooks += [(pre[layer] + "ln1.hook_in", grab(layer, "x", True)),
                      (pre[layer] + "ln2.hook_in", grab(layer, "mlp", True)),
                      (H.q(layer), grab(layer, "q", True))]
            if gqa:
                hooks += [(H.attn_scores(layer), grab(layer, "scores", True)),
                          (H.pattern(layer), grab(layer, "pattern", False)),
                          (H.z(layer), grab(layer, "z", True))]
                if rotary:
                    hooks += [(H.rot_q(layer), grab(layer, "rot_q", False)),
                              (H.rot_k(layer), grab(layer, "rot_k", False)),
                              (pre[layer] + "attn.hook_cos", grab(layer, "cos", False)),
                              (pre[layer] + "attn.hook_sin", grab(layer, "sin", False))]
                else:
                    hooks += [(H.q(layer), grab(layer, "rot_q", False)),
                              (H.k(layer), grab(layer, "rot_k", False))]
            else:
                hooks += [(H.k(layer), grab(layer, "k", True)),
                          (H.v(layer), grab(layer, "v", True))]
        hooks.append((H.resid_post(L - 1), grab(L, "logits", True)))
        with torch.enable_grad():
            logits = model.run_with_hooks(s.clean, fwd_hooks=hooks)
            drop_graph_state(model)
            if record:
                sent = _stack_senders(model, g, seen, "z")
                if sent is None:
                    s.ensure_clean()
                else:
                    s.finish(logits.detach(), sent, seen[H.resid_post(L - 1)])
                del seen, sent
            if len(leaves) != 5 * L + 1:  # x, mlp, q and k, v (or scores, z) per layer
                return None
            val = _row_metric(s.m, prompts, s.metric, None, s.clean_ref, logits).sum()
            grads = torch.autograd.grad(val, [x for *_, x in leaves], allow_unused=True)
            check_finite_grads(grads, "edge attribution")
        del logits, val
        gr: list[dict[str, Tensor]] = [{} for _ in range(L + 1)]
        for (layer, key, x), gx in zip(leaves, grads):
            gr[layer][key] = torch.zeros_like(x) if gx is None else gx
        del leaves, grads

        d_t = s.delta.permute(2, 0, 1, 3).reshape(U, -1)

        def add(p0: int, gx: Tensor) -> None:  # gx: [port, b, pos, d]
            n_u, n = int(n_src[p0]), gx.shape[0]
            g_t = gx.reshape(n, -1)
            full[p0:p0 + n, :n_u] += (g_t @ d_t[:n_u].T).float().cpu() / (B * len(runs))

        for layer in range(L):
            if gqa:
                shares = _shared_kv_shares(model, st[layer], gr[layer])
                if shares is None:
                    return None
                d_k, d_v = shares
            else:
                d_k, d_v = gr[layer]["k"], gr[layer]["v"]
            attn, ln1 = model.blocks[layer].attn, model.blocks[layer].ln1
            slots = {"q": list(range(nh)), "k": kvh, "v": kvh}
            d_out = {"q": gr[layer]["q"], "k": d_k, "v": d_v}
            x = st[layer]["x"].detach()
            parts = [(d_out[kind], getattr(attn, f"W_{kind.upper()}").detach()[slots[kind]])
                     for kind in KINDS]  # the q, k, v ports of a layer are contiguous
            del d_k, d_v
            want = gr[layer]["x"]
            gx = None
            for grads_of in (_port_input_grads, _port_input_grads_autograd):  # the closed form
                gx = grads_of(ln1, x, parts)                  # first; autograd if it does not
                if gx is not None and float((gx.sum(0).to(want.dtype) - want).abs().max()) <= (
                        tol * (1.0 + float(want.abs().max()))):  # add up
                    break
                gx = None
            del parts
            if gx is None:
                return None
            add(g.port_index(layer, "q", 0), gx)
            add(g.port_index(layer, "mlp"), gr[layer]["mlp"][None])
            st[layer].clear()
        add(g.port_index(L, "logits"), gr[L]["logits"][None])
    return full


def _grad_scores(s: _Setup, prompts: PromptSet, runs: Sequence[Run] | None) -> Tensor:
    """Edge scores, positive where the edge helps the task."""
    g = s.graph
    full = _grad_matrix(s, prompts, runs)  # first: it may complete the setup (s.sign)
    return s.sign * full[g.edge_dst, g.edge_src]


# --- exact edge patching ----------------------------------------------------------------------
def _exact_scores(s: _Setup, model, prompts: PromptSet, metric: MetricSpec,
                  chunk_rows: int | None, receiver_layers: Sequence[int] | None = None) -> Tensor:
    """Each (edge, example) pair is one row. Rows whose receivers sit in one block resume the
    clean run at that block (earlier blocks are not run); positions before the first one any
    sender changes are not recomputed; the last block runs only the answer rows. A patched
    q/k/v port is applied where it enters the model: the head's query/key/value becomes
    ``W·norm(resid - delta) + b`` for that head only (for a key/value head shared by a GQA
    group, the group's other query heads get their clean ``z`` back). A receiver whose output
    weights are all zero cannot change anything: its edges score exactly 0."""
    g, B, S, info = s.graph, s.clean.shape[0], s.clean.shape[1], describe(model)
    L, nh, dev = g.n_layers, g.n_heads, s.clean.device
    changed = (s.delta != 0).any(-1)  # [batch, pos, sender]: where each sender differs
    pos_any = changed.any(0).any(-1).nonzero()
    lo = int(pos_any[0, 0]) if len(pos_any) else 0
    names = [H.resid_pre(layer) for layer in range(L)] + [H.resid_post(L - 1)]
    names += [H.z(layer) for layer in range(L)] if info.is_gqa else []
    if info.positional == "alibi":
        raise NotImplementedError(
            f"{info.architecture}: exact edge patching does not yet reproduce the per-edge "
            "reference on ALiBi models (differences of about 1e-3 on a tiny Bloom), so it is "
            "refused. Use method='eap-ig-inputs' or 'eap' (gradient-based, checked on Bloom), or "
            "interp.circuits.exact_reference (one forward per edge).")
    _check_qkv_recompute(model, s.clean[:1])
    with torch.no_grad():
        rs = Restarter(model, s.clean, names=names)
    if not rs.can_window:
        lo = 0
    if chunk_rows is None:
        chunk_rows = max(B, default_budget(info, B, S) // max(1, S - lo))
    per = max(1, chunk_rows // B)
    ans = prompts.answer_pos.to(dev)
    cols_all = s.m.columns(prompts).to(dev) if s.m.columns is not None else None
    use_cols = cols_all is not None and rs.columns_ok(ans, cols_all)
    port_layer = torch.tensor([L if p == len(g.ports) - 1 else p // (3 * nh + 1)
                               for p in range(len(g.ports))], device="cpu")
    dead = _dead_receivers(model, g)
    todo = (changed.any(0).any(0).cpu()[g.edge_src] & ~dead[g.edge_dst]).nonzero()[:, 0]
    scores = torch.zeros(g.n_edges, device="cpu")
    for layer in (range(L + 1) if receiver_layers is None else receiver_layers):
        mine = todo[port_layer[g.edge_dst[todo]] == layer]
        for i in range(0, len(mine), per):
            edges = mine[i:i + per]
            re = edges.repeat_interleave(B)
            rb = torch.arange(B, device=dev).repeat(len(edges))
            rp, ru = g.edge_dst[re].to(dev), g.edge_src[re].to(dev)
            sub = _rows(prompts, rb)
            with torch.no_grad():
                if layer == L:  # the logits port: nothing after it but the unembedding
                    resid = rs.cache[H.resid_post(L - 1)][rb] - s.delta[rb, :, ru]
                    m_rows = _row_metric(s.m, sub, metric, rb, s.clean_ref, rs.unembed(resid))
                else:
                    hooks = _exact_hooks(s, rs, model, layer, rp, ru, rb)
                    resid = rs.cache[H.resid_pre(layer)][rb, lo:]
                    old = bool(getattr(model.cfg, "use_hook_mlp_in", False))
                    model.set_use_hook_mlp_in(True)
                    try:
                        m_rows = _resume_metric(s, rs, sub, metric, layer, resid, hooks, lo,
                                                ans[rb], cols_all[rb] if use_cols else None)
                    finally:
                        model.set_use_hook_mlp_in(old)
            eff = s.sign * (s.m_clean[rb] - m_rows).cpu()
            scores[edges] = eff.view(len(edges), B).mean(1)
    return scores


def _check_qkv_recompute(model, tokens: Tensor) -> None:
    """Exact edge patching recomputes a patched head's query / key / value as
    ``W·norm(resid) + b`` from the bridge's per-head weights; refuse a family where that does
    not reproduce the model's own values (checked on layer 0 of one clean example)."""
    attn, ln1 = model.blocks[0].attn, model.blocks[0].ln1
    names = [H.resid_pre(0)] + [getattr(H, k)(0) for k in KINDS]
    with torch.no_grad(), _split_mode(model):
        _, cache = model.run_with_cache(tokens, names_filter=names)
        x = ln1(cache[H.resid_pre(0)])
        for kind in KINDS:
            W = getattr(attn, f"W_{kind.upper()}", None)
            got = cache.cache_dict.get(getattr(H, kind)(0)) if hasattr(cache, "cache_dict") \
                else cache[getattr(H, kind)(0)]
            if W is None or got is None:
                ok = False
            else:
                want = torch.einsum("bsd,hde->bshe", x, W.detach())
                b = getattr(attn, f"b_{kind.upper()}", None)
                want = want if b is None else want + b.detach()
                ok = want.shape == got.shape and bool(torch.allclose(
                    want.float(), got.float(), atol=tolerance(model, 1e-4) * (
                        1 + float(got.abs().max()))))
            if not ok:
                raise NotImplementedError(
                    f"{describe(model).architecture}: exact edge patching recomputes a head's "
                    f"{kind} from the per-head weights W_{kind.upper()} / b_{kind.upper()}, and "
                    "on this family they do not reproduce the model's own values. Use "
                    "method='eap-ig-inputs' or 'eap' (gradient-based), or exact_reference "
                    "(one forward per edge).")


def _dead_receivers(model, g: Graph) -> Tensor:
    """``[port]``: True where the receiving node's output weights are all zero."""
    dead = torch.zeros(len(g.ports), dtype=torch.bool, device="cpu")
    for layer in range(g.n_layers):
        w_o = getattr(model.blocks[layer].attn, "W_O", None)
        if w_o is not None and w_o.shape[0] == g.n_heads:
            off = (w_o.detach() == 0).flatten(1).all(1).cpu()
            for kind in KINDS:
                p0 = g.port_index(layer, kind, 0)
                dead[p0:p0 + g.n_heads] = off
        w_out = getattr(model.blocks[layer].mlp, "W_out", None)
        if w_out is not None and bool((w_out.detach() == 0).all()):
            dead[g.port_index(layer, "mlp")] = True
    return dead


def _exact_hooks(s: _Setup, rs, model, layer: int, rp: Tensor, ru: Tensor, rb: Tensor):
    """Hooks that patch row ``r``'s port ``rp[r]`` (all in block ``layer``) by
    ``-delta[rb[r], :, ru[r]]``."""
    g, info = s.graph, describe(model)
    attn, ln1 = model.blocks[layer].attn, model.blocks[layer].ln1
    rel = rp - g.port_index(layer, "q", 0)  # kind * H + head, or 3H for the MLP
    kind_of, head_of = rel // g.n_heads, rel % g.n_heads
    hooks = []
    for k, kind in enumerate(KINDS):
        sel = (kind_of == k).nonzero()[:, 0]
        if len(sel) == 0:
            continue
        heads = head_of[sel]
        slot = heads if kind == "q" else heads // info.group_size
        W = getattr(attn, f"W_{kind.upper()}").detach()[slot]  # [n, d_model, d_head]
        bias = getattr(attn, f"b_{kind.upper()}", None)
        bias = None if bias is None else bias.detach()[slot]

        def fn(x, hook, sel=sel, slot=slot, W=W, bias=bias):
            w0, w1 = rs.window
            src = rs.cache[H.resid_pre(layer)][rb[sel], w0:w1] - s.delta[rb[sel], w0:w1, ru[sel]]
            new = torch.einsum("nsd,nde->nse", ln1(src), W)
            if bias is not None:
                new = new + bias[:, None]
            x = x.clone()
            x[sel, :, slot] = new.to(x.dtype)
            return x
        hooks.append((getattr(H, kind)(layer), fn))
    if info.is_gqa:  # a k/v port belongs to one query head: the rest of its group stays clean
        kv = (kind_of == 1) | (kind_of == 2)
        sel = kv.nonzero()[:, 0]
        if len(sel):
            own = head_of[sel]

            def restore(z, hook, sel=sel, own=own):
                w0, w1 = rs.window
                keep = torch.nn.functional.one_hot(own, g.n_heads).bool()[:, None, :, None]
                clean = rs.cache[H.z(layer)][rb[sel], w0:w1]
                z = z.clone()
                z[sel] = torch.where(keep, z[sel], clean.to(z.dtype))
                return z
            hooks.append((H.z(layer), restore))
    sel = (rel == 3 * g.n_heads).nonzero()[:, 0]
    if len(sel):
        def mlp(x, hook, sel=sel):
            w0, w1 = rs.window
            x = x.clone()
            x[sel] -= s.delta[rb[sel], w0:w1, ru[sel]]
            return x
        hooks.append((H.mlp_in(layer), mlp))
    return hooks


def _resume_metric(s, rs, sub, metric, layer, resid, hooks, lo, ans, cols) -> Tensor:
    R = resid.shape[0]
    if s.m.all_positions:
        logits = rs.resume(layer, resid, rows=None, fwd_hooks=hooks, lo=lo)
        if lo:
            base = rs.logits[torch.arange(R, device=resid.device) % rs.batch, :lo]
            logits = torch.cat([base.to(logits.dtype), logits], dim=1)
        return _row_metric(s.m, sub, metric, None, s.clean_ref, logits)
    if cols is not None:
        return s.m.from_columns(rs.resume(layer, resid, rows=ans, fwd_hooks=hooks, lo=lo,
                                          columns=cols))
    out = rs.resume(layer, resid, rows=ans, fwd_hooks=hooks, lo=lo)
    m = s.m if metric != "kl" else resolve_metric("kl", clean_answer_logits=s.clean_ref[
        torch.arange(R, device=resid.device) % rs.batch])
    return m.fn(out, sub)


def exact_reference(model, prompts: PromptSet, *, metric: MetricSpec = "logit_diff",
                    edges: Sequence[int] | None = None) -> Graph:
    """Exact edge patching with one plain ``run_with_hooks`` forward per edge (slow; the parity
    reference for ``method="exact"``). For a k/v edge into a query head of a GQA group, the key/
    value head's input is patched and the other heads of the group get their clean ``z`` back.
    ``edges``: only these edge indices (the others' scores are NaN)."""
    s = _Setup(model, prompts, metric)
    g, info = s.graph, describe(model)
    with torch.no_grad(), _split_mode(model):
        _, cache = model.run_with_cache(s.clean, names_filter=lambda n: n.endswith("hook_z"))
    scores = torch.full((g.n_edges,), float("nan"), device="cpu")
    for e in range(g.n_edges) if edges is None else [int(i) for i in edges]:
        u, p = int(g.edge_src[e]), int(g.edge_dst[e])
        d = s.delta[:, :, u]
        name = g.ports[p]
        hooks = []
        if name == "logits":
            hooks.append((H.resid_post(g.n_layers - 1), lambda x, hook, d=d: x - d))
        elif name.startswith("m"):
            hooks.append((H.mlp_in(int(name[1:])), lambda x, hook, d=d: x - d))
        else:
            layer, rest = name[1:].split(".h")
            layer, head, kind = int(layer), int(rest.split("<")[0]), rest[-2]
            slot = head if kind == "q" else info.kv_head(head)

            def sub(x, hook, d=d, slot=slot):
                x = x.clone()
                x[:, :, slot] -= d
                return x
            hooks.append((H.qkv_input(layer, kind), sub))
            if kind != "q" and info.is_gqa:
                others = [h for h in range(info.n_heads) if h != head]

                def keep(z, hook, layer=layer, others=others):
                    z = z.clone()
                    z[:, :, others] = cache[H.z(layer)][:, :, others]
                    return z
                hooks.append((H.z(layer), keep))
        with torch.no_grad(), _split_mode(model):
            logits = model.run_with_hooks(s.clean, fwd_hooks=hooks)
        m_p = _row_metric(s.m, prompts, metric, torch.arange(len(prompts), device=s.clean_ref.device),
                          s.clean_ref, logits)
        scores[e] = s.sign * float((s.m_clean - m_p).mean())
    g.scores = scores
    g.meta.update(_meta(s, "exact-reference", metric))
    return g


def _meta(s: _Setup, method: str, metric: MetricSpec) -> dict:
    return {"method": method, "metric": s.m.name, "sign_convention": SIGN_CONVENTION,
            "clean": float(s.m_clean.mean()), "corrupted": float(s.m_corr.mean()),
            "n_examples": int(s.clean.shape[0])}


def discover(
    model,
    prompts: PromptSet,
    *,
    method: Method = "eap-ig-inputs",
    metric: MetricSpec = "logit_diff",
    ig_steps: int = 5,
    chunk_rows: int | None = None,
    threshold: float = 0.01,
    receiver_layers: Sequence[int] | None = None,
    executor=None,
) -> Graph:
    """Score every edge of the model's graph (see :class:`Graph`) and return the graph.

    ``method``: ``"eap"``, ``"eap-ig-inputs"`` (``ig_steps`` interpolation steps), ``"exact"``
    (batched exact edge patching; ``chunk_rows`` rows per forward), ``"exact-reference"``.
    Scores follow the module's sign convention. No edge is selected yet: call
    ``graph.top_n(n)``, ``graph.threshold(t)`` or ``graph.greedy(n)``.
    ``"acdc"`` (Conmy et al. 2023, see ``interp.circuits._acdc``) selects the edges itself:
    ``threshold`` is its tau, and ``metric="kl"`` its usual criterion.

    ``receiver_layers`` (``method="exact"`` only): score only the edges into these layers'
    ports (``n_layers`` stands for the ``logits`` port); the other edges keep score 0.
    ``executor`` (``method="exact"`` only): "local", "ray" or an ``interp.distributed``
    executor: the edges are sharded by receiver layer, each shard on one worker."""
    if executor is not None:
        params = dict(locals())
        if method != "exact":
            raise ValueError(f"executor= shards exact edge patching only (method='exact'); "
                             f"method={method!r} runs in one process: drop executor=.")
        from interp.distributed import dispatch

        return dispatch("discover", params)
    if receiver_layers is not None:
        if method != "exact":
            raise ValueError("receiver_layers= applies to method='exact' only.")
        n = describe(model).n_layers
        bad = [x for x in receiver_layers if not 0 <= int(x) <= n]
        if bad:
            raise ValueError(f"receiver_layers {bad} out of range: 0..{n - 1} are the layers, "
                             f"{n} is the logits port.")
        receiver_layers = sorted({int(x) for x in receiver_layers})
    if method == "exact-reference":
        return exact_reference(model, prompts, metric=metric)
    if method == "acdc":
        from interp.circuits._acdc import acdc

        return acdc(model, prompts, threshold=threshold, metric=metric)
    if method not in GRADIENT_METHODS + ("exact",):
        raise ValueError(f"unknown method {method!r}; use one of "
                         f"{', '.join(map(repr, GRADIENT_METHODS))}, 'exact', 'acdc' or "
                         "'exact-reference'.")
    if method.startswith("eap-ig") and int(ig_steps) < 1:
        raise ValueError("ig_steps must be at least 1.")
    s = _Setup(model, prompts, metric, defer_clean=method == "eap")  # EAP's gradient run is
    g = s.graph                                                       # the clean run
    if method == "exact":
        g.scores = _exact_scores(s, model, prompts, metric, chunk_rows, receiver_layers)
        if receiver_layers is not None:
            g.meta["receiver_layers"] = list(receiver_layers)
    else:
        runs = _runs(method, int(ig_steps), g.n_layers)
        g.scores = _grad_scores(s, prompts, runs).float()
        g.meta["gradient_runs"] = len(runs)
    g.meta.update(_meta(s, method, metric))
    if method == "eap-ig-inputs":
        g.meta["ig_steps"] = int(ig_steps)
        g.meta["ig_grid"] = "alpha = k/m, k = 1..m (input embeddings, corrupted -> clean)"
    if method == "eap-ig-activations":
        g.meta["ig_steps"] = int(ig_steps)
        g.meta["ig_grid"] = ("alpha = k/m, k = 1..m, for each of the input, every attention "
                             "layer's and every MLP's output in turn (corrupted -> clean)")
    return g
