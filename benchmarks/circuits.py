"""Edge-level circuit discovery on the zoo IOI model (4 layers x 8 heads, 1,519 edges).

1. Exact edge patching, batched (``discover(method="exact")``), against the one-forward-per-edge
   loop (``exact_reference``'s per-edge step) on a spread sample of edges in the same run; the
   loop's time is extrapolated to all edges from the sample (a full loop takes minutes on a
   shared CPU). Both read the same prompts; ``max_abs_diff`` is over the sampled edges.
2. EAP-IG (inputs, m = 5): wall time in forward-equivalents (one clean forward of the batch).
3. Faithfulness curve of the EAP-IG scores: MIB's CPR and CMD.
4. Planted circuit: every head's and MLP's output weights zeroed except two heads (L0H1, L3H2),
   so only the edges among input, those heads and the logits can matter (minus two that read
   only the answer position, where clean and corrupted tokens agree); ROC AUC of |score| for
   exact and EAP-IG (the lower is printed).

Times are process CPU times with one thread. The last line is
``circuits: speedup_exact=<x> auc_planted=<a> cpr_eapig_ioi=<c> cmd_eapig_ioi=<d> max_abs_diff=<e>``.

    .venv/bin/python benchmarks/circuits.py [--n 8] [--sample 48]
    .venv/bin/python benchmarks/circuits.py --zoo-table   # CPR / CMD per method on every zoo model
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def _dead(model, live: set[str]):
    m2 = copy.deepcopy(model)
    info = m2.cfg
    d_head = int(info.d_head)
    with torch.no_grad():
        for layer in range(int(info.n_layers)):
            o = m2.blocks[layer].attn.o.original_component
            for h in range(int(info.n_heads)):
                if f"a{layer}.h{h}" in live:
                    continue
                if type(o).__name__ == "Conv1D":
                    o.weight[h * d_head:(h + 1) * d_head, :] = 0
                else:
                    o.weight[:, h * d_head:(h + 1) * d_head] = 0
            m2.blocks[layer].mlp.out.original_component.weight.zero_()
    return m2


def _auc(score: torch.Tensor, label: torch.Tensor) -> float:
    pos, neg = score[label], score[~label]
    return float((pos[:, None] > neg[None, :]).float().mean()
                 + 0.5 * (pos[:, None] == neg[None, :]).float().mean())


def _per_edge_loop(model, ps, edges: list[int]) -> torch.Tensor:
    """The reference: one run_with_hooks forward per edge (exact_reference's loop body)."""
    from interp.circuits import _discover as D

    s = D._Setup(model, ps, "logit_diff")
    g = s.graph
    out = torch.zeros(len(edges))
    for i, e in enumerate(edges):
        u, p = int(g.edge_src[e]), int(g.edge_dst[e])
        d = s.delta[:, :, u]
        name = g.ports[p]
        if name == "logits":
            hook = (D.H.resid_post(g.n_layers - 1), lambda x, hook, d=d: x - d)
        elif name.startswith("m"):
            hook = (D._mlp_in(int(name[1:])), lambda x, hook, d=d: x - d)
        else:
            layer, rest = name[1:].split(".h")
            head, kind = int(rest.split("<")[0]), rest[-2]

            def sub(x, hook, d=d, head=head):
                x = x.clone()
                x[:, :, head] -= d
                return x
            hook = (D._port_in(int(layer), kind), sub)
        with torch.no_grad(), D._split_mode(model):
            logits = model.run_with_hooks(s.clean, fwd_hooks=[hook])
        out[i] = float((s.m_clean - s.m.from_full(logits, ps)).mean())
    return out


def zoo_table(n: int) -> None:
    """CPR / CMD of each scoring method and ACDC's own circuit on the zoo models, as markdown."""
    import interp
    from interp.circuits import acdc, discover, evaluate, faithfulness_curve
    from interp.prompts import PromptSpec

    rows = ["| model | prompts | edges | method | CPR | CMD | seconds |", "|---|---|---|---|---|---|---|"]
    for name in ("ioi", "induction", "needle"):
        model = interp.load_model(name)
        ps = PromptSpec(name, n=n).build(model)
        shape = tuple(ps.clean_tokens.shape)
        for method in ("eap", "clean-corrupted", "eap-ig-inputs", "eap-ig-activations", "exact"):
            t = time.process_time()
            g = discover(model, ps, method=method)
            dt = time.process_time() - t
            c = faithfulness_curve(model, ps, g)
            rows.append(f"| {name} | {shape[0]} x {shape[1]} | {g.n_edges} | {method} | "
                        f"{c.cpr:.3f} | {c.cmd:.3f} | {dt:.1f} |")
            print(rows[-1], flush=True)
        t = time.process_time()
        a = acdc(model, ps, threshold=0.01, progress=False)
        dt = time.process_time() - t
        f = evaluate(model, ps, a)["faithfulness"]
        rows.append(f"| {name} | {shape[0]} x {shape[1]} | {a.n_edges} | acdc (tau 0.01, KL): "
                    f"{a.n_in_graph} edges, faithfulness {f:.3f} | - | - | {dt:.1f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


def correlation_table(n: int) -> None:
    """Pearson correlation of each gradient method's edge scores with exact edge patching, for
    m = 1, 5, 20 interpolation steps, on every zoo model, as markdown."""
    import interp
    from interp.circuits import discover
    from interp.prompts import PromptSpec

    rows = ["| model | method | m = 1 | m = 5 | m = 20 |", "|---|---|---|---|---|"]
    for name in ("ioi", "induction", "needle"):
        model = interp.load_model(name)
        ps = PromptSpec(name, n=n).build(model)
        exact = discover(model, ps, method="exact").scores

        def corr(s: torch.Tensor) -> float:
            return float(torch.corrcoef(torch.stack([s, exact]))[0, 1])

        rows.append(f"| {name} | eap | {corr(discover(model, ps, method='eap').scores):.3f} | | |")
        rows.append(f"| {name} | clean-corrupted | "
                    f"{corr(discover(model, ps, method='clean-corrupted').scores):.3f} | | |")
        for method in ("eap-ig-inputs", "eap-ig-activations"):
            cells = [corr(discover(model, ps, method=method, ig_steps=m).scores) for m in (1, 5, 20)]
            rows.append(f"| {name} | {method} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        print("\n".join(rows[-4:]), flush=True)
    print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--sample", type=int, default=48)
    ap.add_argument("--zoo-table", action="store_true",
                    help="only the CPR / CMD table of every method on every zoo model")
    ap.add_argument("--correlation", action="store_true",
                    help="only the correlation with exact patching for m = 1, 5, 20")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.correlation:
        correlation_table(args.n)
        return
    if args.zoo_table:
        zoo_table(args.n)
        return
    import interp
    from interp.circuits import Graph, discover, faithfulness_curve

    model = interp.load_model("ioi")
    ps = interp.prompts.ioi(model, args.n)
    E = Graph.from_model(model).n_edges
    print(f"model: zoo ioi, {E} edges; prompts {tuple(ps.clean_tokens.shape)}")

    t = time.process_time()
    exact = discover(model, ps, method="exact")
    t_fast = time.process_time() - t
    sample = torch.linspace(0, E - 1, args.sample).round().long().unique().tolist()
    t = time.process_time()
    ref = _per_edge_loop(model, ps, sample)
    t_loop = (time.process_time() - t) * E / len(sample)
    diff = float((exact.scores[sample] - ref).abs().max())
    speedup = t_loop / t_fast
    print(f"exact: batched {t_fast:.2f} s; per-edge loop {t_loop:.1f} s (extrapolated from "
          f"{len(sample)} edges); speedup {speedup:.1f}x; max |diff| {diff:.2e}")

    with torch.no_grad():
        t = time.process_time()
        for _ in range(3):
            model(ps.clean_tokens)
        t_fwd = (time.process_time() - t) / 3
    t = time.process_time()
    ig = discover(model, ps, method="eap-ig-inputs", ig_steps=5)
    t_ig = time.process_time() - t
    r = float(torch.corrcoef(torch.stack([ig.scores, exact.scores]))[0, 1])
    print(f"eap-ig-inputs (m=5): {t_ig:.2f} s = {t_ig / t_fwd:.0f} forward-equivalents "
          f"(2 caching forwards + 5 forward/backward + setup checks); corr with exact {r:.3f}")

    curve = faithfulness_curve(model, ps, ig)
    ex_curve = faithfulness_curve(model, ps, exact)
    print(curve.table().to_string(index=False))
    print(f"CPR/CMD eap-ig-inputs {curve.cpr:.3f} / {curve.cmd:.3f}; exact {ex_curve.cpr:.3f} / "
          f"{ex_curve.cmd:.3f}")

    live = {"input", "a0.h1", "a3.h2", "logits"}
    planted = _dead(model, live)
    # The answer-position token is the same in clean and corrupted prompts, so the input's
    # difference is zero where the logits and the last layer's queries read it: those two live
    # edges carry nothing and are not counted as true.
    b = torch.arange(len(ps))
    same = bool((ps.clean_tokens[b, ps.answer_pos] == ps.corrupted_tokens[b, ps.answer_pos]).all())
    inert = {"input->logits", "input->a3.h2<q>"} if same else set()
    aucs = {}
    for method in ("exact", "eap-ig-inputs"):
        g = discover(planted, ps, method=method)
        truth = torch.tensor([s in live and p.split("<")[0] in live and f"{s}->{p}" not in inert
                              for s, p in (n.split("->") for n in g.edge_names())])
        aucs[method] = _auc(g.scores.abs(), truth)
    print(f"planted AUC: {aucs}")
    print(f"circuits: speedup_exact={speedup:.1f} auc_planted={min(aucs.values()):.3f} "
          f"cpr_eapig_ioi={curve.cpr:.3f} cmd_eapig_ioi={curve.cmd:.3f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
