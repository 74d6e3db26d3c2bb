"""The ``interp`` command.

Heavy libraries (torch, transformer-lens) are imported inside the commands, so ``interp --help``
answers at once.
"""

# ruff: noqa: B008  (typer declares options as argument defaults)
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from interp.cli._common import (
    _OUT_HELP,
    AblationMethod,
    Direction,
    MetricName,
    PatchTarget,
    PromptKind,
    ScoreKind,
    _check_out,
    _console,
    _fail,
    _load,
    _load_with_prompts,
    _parse_ints,
    _parse_list,
    _run,
    lens_frame,
    print_frame,
    print_matrix,
    readable,
    readable_top,
    write_out,
)

app = typer.Typer(
    name="interp",
    help=(
        "Mechanistic-interpretability workbench: patching, ablation, logit lens, head scores.\n\n"
        "Examples:\n\n"
        "  interp models                       # the shipped zoo\n\n"
        "  interp models ioi                   # describe one model\n\n"
        "  interp patch ioi --target z         # head patching on IOI prompts\n\n"
        "  interp ablate ioi --heads L3H0,L3H1 # ablate two heads\n\n"
        "  interp lens ioi                     # logit lens at the answer position\n\n"
        "  interp heads induction --score induction\n\n"
        "  interp circuit ioi --top-n 200 --out circuit.json\n\n"
        "  interp app                          # the Streamlit explorer"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
@app.callback()
def _options(device: str = typer.Option(
        "cpu", "--device", help="where models run: cpu, cuda, cuda:N, mps or auto (the first "
        "of CUDA, MPS, CPU); give it before the command: interp --device auto patch ioi")):
    from interp.cli import _common

    _common.DEVICE = device


zoo_app = typer.Typer(help="Train or inspect the zoo models shipped with interp.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@app.command()
def models(
    spec: str | None = typer.Argument(None, help="a zoo name, HF directory or Hub id to describe"),
    out: Path | None = typer.Option(None, "--out", help="write .json/.csv/.html"),
):
    """List the zoo, or describe any loadable model.

    Examples: `interp models`, `interp models needle`, `interp models ./my-hf-dir`.
    """
    import pandas as pd

    from interp.models import ZOO, zoo_path

    if spec is None:
        rows = [
            {"name": e.name, "family": e.family, "trained": (zoo_path(e.name) / "config.json").is_file(),
             "prompts": e.task, "summary": e.summary}
            for e in ZOO.values()
        ]
        df = pd.DataFrame(rows)
        print_frame(df, "interp zoo")
        write_out(out, None, df)
        return
    from interp.models import describe

    info = describe(_load(spec))
    typer.echo(info.summary())
    df = pd.DataFrame([{k: v for k, v in info.to_dict().items() if k != "hooks"}])
    write_out(out, None, df)



# ----------------------------------------------------------------------------------------------
# interp patch
# ----------------------------------------------------------------------------------------------


@app.command()
def patch(
    spec: str = typer.Argument(..., metavar="MODEL", help="zoo name, HF directory or Hub id"),
    target: PatchTarget = typer.Option(PatchTarget.resid_pre, "--target", "-t",
                                       help="activation to patch (ignored with --path)"),
    direction: Direction = typer.Option(Direction.denoising, "--direction",
                                        help="denoising: clean into corrupted; noising: the reverse"),
    metric: MetricName = typer.Option(MetricName.logit_diff, "--metric"),
    per_position: bool = typer.Option(True, "--per-position/--all-positions",
                                      help="one patch per position, or all positions at once"),
    layers: str | None = typer.Option(None, "--layers", help="comma-separated layers (default all)"),
    path: bool = typer.Option(False, "--path", help="path patching: sender heads -> receivers"),
    receivers: str = typer.Option("logits", "--receivers",
                                  help="with --path: 'logits' or heads like L3H0,L3H1"),
    receiver_input: str = typer.Option("q", "--receiver-input", help="with --path: q, k or v"),
    prompts: PromptKind = typer.Option(PromptKind.auto, "--prompts", "-p",
                                       help="prompt set (auto: the zoo model's own task, else ioi)"),
    n: int = typer.Option(16, "--n", min=1, help="number of prompts"),
    seed: int = typer.Option(0, "--seed"),
    top: int = typer.Option(10, "--top", min=1, help="rows in the top-cells table"),
    out: Path | None = typer.Option(None, "--out", "-o", help=_OUT_HELP),
):
    """Activation patching (or path patching with --path) on a model's prompt set.

    Scores are normalised: 1 = the patch fully restores the clean behaviour (denoising),
    -1 = it fully breaks it (noising).

    Examples:

      interp patch ioi                               # resid_pre, layer x position

      interp patch ioi --target z --all-positions    # one score per head

      interp patch induction --target pattern --out pattern.html

      interp patch ioi --path --receivers logits     # which heads act directly on the logits
    """
    _check_out(out)
    if receiver_input not in ("q", "k", "v"):
        _fail(f"--receiver-input must be q, k or v, not {receiver_input!r}")
    model, ps = _load_with_prompts(spec, prompts, n, seed)
    if path:
        try:
            from interp.patching import path_patching
        except (ImportError, AttributeError):
            _fail("path patching is not available in this installation of interp")
        recv = "logits" if receivers == "logits" else _parse_list(receivers, "--receivers")
        res = _run(path_patching, model, ps, receivers=recv, receiver_input=receiver_input,
                   metric=metric.value, progress=True)
        title = f"Path patching: senders -> {receivers} ({receiver_input})"
    else:
        from interp.patching import activation_patching

        res = _run(activation_patching, model, ps, target=target.value, per_position=per_position,
                   direction=direction.value, metric=metric.value,
                   layers=_parse_ints(layers, "--layers"), progress=True)
        title = f"Activation patching ({direction.value}) of {target.value}"
    _console().print(f"clean {res.meta.get('metric', metric.value)} = "
                     f"{res.meta['clean']:.4g}, corrupted = {res.meta['corrupted']:.4g}  "
                     f"({len(ps)} prompts)")
    if res.values.ndim == 2:
        d0, d1 = res.dims
        print_matrix(res.values, res.labels(d0), res.labels(d1), title)
    print_frame(readable_top(res, top), f"top {top} cells by |score|")
    write_out(out, res, res.to_frame())


# ----------------------------------------------------------------------------------------------
# interp ablate
# ----------------------------------------------------------------------------------------------


@app.command()
def ablate(
    spec: str = typer.Argument(..., metavar="MODEL", help="zoo name, HF directory or Hub id"),
    heads: str | None = typer.Option(None, "--heads", "-c",
                                        help="components to ablate together: L3H0,ATTN2,MLP1"),
    sweep: bool = typer.Option(False, "--sweep", help="ablate every head (and MLP) alone instead"),
    method: AblationMethod = typer.Option(AblationMethod.zero, "--method", "-m"),
    metric: MetricName = typer.Option(MetricName.logit_diff, "--metric"),
    prompts: PromptKind = typer.Option(PromptKind.auto, "--prompts", "-p"),
    n: int = typer.Option(16, "--n", min=1, help="number of prompts"),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", "-o", help=_OUT_HELP),
):
    """Ablate components (zero / mean / resample) and report the metric change.

    Examples:

      interp ablate ioi --heads L3H0,L3H4              # zero-ablate two heads together

      interp ablate ioi --heads MLP0 --method mean

      interp ablate induction --sweep --method mean --out sweep.csv
    """
    _check_out(out)
    if sweep == (heads is not None):
        _fail("give either --heads L3H0,... (ablate them together) or --sweep (each alone)")
    model, ps = _load_with_prompts(spec, prompts, n, seed)
    from interp import ablation as A

    if sweep:
        res = _run(A.knockout_sweep, model, ps, method=method.value, metric=metric.value,
                   progress=True)
        _console().print(f"baseline {res.meta['metric']} = {res.baseline:.4g} ({len(ps)} prompts)")
        print_matrix(res.values, res.labels("layer"), res.labels("head"),
                     f"{method.value}-ablating each head: change in {res.meta['metric']}")
        if res.mlp_values is not None:
            print_frame(readable(res.mlps.to_frame()), "each MLP alone")
        write_out(out, res, res.to_frame())
        return
    comps = _parse_list(heads, "--heads")
    res = _run(A.ablate, model, ps, comps, method=method.value, metric=metric.value)
    import pandas as pd

    lo, hi = (float(x) for x in res.ci[0])
    df = pd.DataFrame([{
        "ablated": "+".join(res.meta["components"]), "method": method.value,
        "metric": res.meta["metric"], "baseline": res.baseline, "after": res.ablated,
        "change": float(res.values[0]), "ci_low": lo, "ci_high": hi,
    }])
    print_frame(df, "Ablation")
    rows = [{"example": i, "top before": f"{b[0][0]!r} {b[0][1]:.2f}",
             "top after": f"{a[0][0]!r} {a[0][1]:.2f}"}
            for i, (b, a) in enumerate(zip(res.top_before, res.top_after))]
    print_frame(pd.DataFrame(rows), "top-1 prediction at the answer position", max_rows=8)
    write_out(out, res, df)


# ----------------------------------------------------------------------------------------------
# interp lens
# ----------------------------------------------------------------------------------------------


@app.command()
def lens(
    spec: str = typer.Argument(..., metavar="MODEL", help="zoo name, HF directory or Hub id"),
    prompts: PromptKind = typer.Option(PromptKind.auto, "--prompts", "-p"),
    n: int = typer.Option(8, "--n", min=1, help="number of prompts"),
    seed: int = typer.Option(0, "--seed"),
    example: int = typer.Option(0, "--example", min=0, help="which prompt's top tokens to show"),
    out: Path | None = typer.Option(None, "--out", "-o", help=_OUT_HELP),
):
    """Logit lens at the answer position: per layer, how often the answer is already top-1.

    Examples:

      interp lens ioi

      interp lens needle --example 2 --out lens.html
    """
    _check_out(out)
    model, ps = _load_with_prompts(spec, prompts, n, seed)
    if example >= len(ps):
        _fail(f"--example {example} is out of range: the prompt set has {len(ps)} prompts")
    from interp.lens import logit_lens

    res = _run(logit_lens, model, ps)
    frame = lens_frame(res, example)
    print_frame(frame, f"Logit lens at the answer position ({len(ps)} prompts)")
    firsts = [res.first_top1_layer(example=e) for e in range(len(ps))]
    labels = res.coords["layer"]
    hit = [f for f in firsts if f is not None]
    if hit:
        import statistics

        _console().print(f"answer first top-1 at row {labels[int(statistics.median(hit))]} "
                         f"(median over {len(hit)}/{len(ps)} prompts whose answer becomes top-1)")
    else:
        _console().print("the answer never becomes top-1 on these prompts")
    write_out(out, res, frame)


# ----------------------------------------------------------------------------------------------
# interp heads
# ----------------------------------------------------------------------------------------------


@app.command()
def heads(
    spec: str = typer.Argument(..., metavar="MODEL", help="zoo name, HF directory or Hub id"),
    score: ScoreKind = typer.Option(ScoreKind.induction, "--score", "-s",
                                    help="pattern scores on repeated random tokens, retrieval "
                                         "(Wu et al. 2024) or importance (Michel et al. 2019)"),
    seq_len: int = typer.Option(50, "--seq-len", min=2, help="pattern scores: length of r in [BOS]+r+r"),
    batch: int = typer.Option(10, "--batch", min=1, help="pattern scores: sequences"),
    lengths: str | None = typer.Option(None, "--lengths", help="retrieval: haystack lengths, e.g. 128,256"),
    depths: str | None = typer.Option(None, "--depths", help="retrieval: needle depths in %, e.g. 0,50,100"),
    counting: str = typer.Option("events", "--counting",
                                 help="retrieval: 'events' (copy events per needle token, as the "
                                      "paper's code; can exceed 1) or 'fraction' (of the needle "
                                      "copied, 0-1)"),
    prompts: PromptKind = typer.Option(PromptKind.auto, "--prompts", "-p", help="importance: prompt set"),
    n: int = typer.Option(16, "--n", min=1, help="importance: number of prompts"),
    seed: int = typer.Option(0, "--seed"),
    top: int = typer.Option(10, "--top", min=1),
    out: Path | None = typer.Option(None, "--out", "-o", help=_OUT_HELP),
):
    """Score every head: induction / previous-token / duplicate-token, retrieval, importance.

    Examples:

      interp heads induction                          # induction scores

      interp heads induction --score previous_token --out prev.csv

      interp heads needle --score retrieval --lengths 128,256 --depths 0,50,100

      interp heads needle --score retrieval --counting fraction   # 0-1: fraction of the needle

      interp heads ioi --score importance
    """
    _check_out(out)
    if score == ScoreKind.importance:
        model, ps = _load_with_prompts(spec, prompts, n, seed)
        from interp.ablation import head_importance

        res = _run(head_importance, model, ps)
    else:
        model = _load(spec)
        if score == ScoreKind.retrieval:
            from interp.retrieval import retrieval_scores

            res = _run(retrieval_scores, model, lengths=_parse_ints(lengths, "--lengths"),
                       depths=_parse_ints(depths, "--depths"), seed=seed, progress=True,
                       counting=counting)
            _console().print(f"{res.meta['n_accepted']}/{res.meta['n_trials']} trials answered "
                             f"(ROUGE-1 recall > {res.meta['min_recall']}); retrieval heads "
                             f"(> {res.meta['threshold']}): {', '.join(res.meta['retrieval_heads']) or 'none'}")
        else:
            from interp import heads as HS

            fn = {ScoreKind.induction: HS.induction_scores,
                  ScoreKind.previous_token: HS.previous_token_scores,
                  ScoreKind.duplicate_token: HS.duplicate_token_scores}[score]
            res = _run(fn, model, seq_len=seq_len, batch=batch, seed=seed)
    print_matrix(res.values, res.labels("layer"), res.labels("head"),
                 res.meta.get("title", score.value))
    ranked = res.top(top)
    print_frame(ranked[[c for c in ("component_label", "value", "kv_head") if c in ranked.columns]]
                .rename(columns={"component_label": "head", "value": "score"}),
                f"top {top} heads by {score.value} score")
    write_out(out, res, res.to_frame())


class CircuitMethod(str, Enum):
    eap = "eap"
    eap_ig_inputs = "eap-ig-inputs"
    eap_ig_activations = "eap-ig-activations"
    clean_corrupted = "clean-corrupted"
    exact = "exact"
    acdc = "acdc"


@app.command()
def circuit(
    spec: str = typer.Argument(..., metavar="MODEL", help="zoo name, HF directory or Hub id"),
    method: CircuitMethod = typer.Option(CircuitMethod.eap_ig_inputs, "--method", "-m"),
    top_n: int | None = typer.Option(None, "--top-n", min=1,
                                     help="keep the N edges with the largest |score| (default 200)"),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0,
                                           help="keep the edges with |score| >= this instead"),
    prompts: PromptKind = typer.Option(PromptKind.auto, "--prompts", "-p"),
    n: int = typer.Option(16, "--n", min=1, help="number of prompt pairs"),
    seed: int = typer.Option(0, "--seed"),
    metric: MetricName = typer.Option(MetricName.logit_diff, "--metric"),
    ig_steps: int = typer.Option(5, "--ig-steps", min=1, help="EAP-IG interpolation steps"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="write the circuit: .json (EAP-IG graph JSON) or .dot"),
):
    """Find a circuit: score every edge, keep the top ones, measure its faithfulness. With
    --method acdc, edges are pruned one at a time while the metric moves less than --threshold.

    Edges run from the input, each head and each MLP to each head's q/k/v input, each MLP and
    the logits; outside the circuit an edge carries the corrupted run's value.

    Examples:

      interp circuit ioi --method eap-ig-inputs --top-n 200 --out circuit.json

      interp circuit needle --method eap --threshold 0.01 --out circuit.dot
    """
    if top_n is not None and threshold is not None:
        _fail("give --top-n or --threshold, not both")
    if out is not None and out.suffix not in (".json", ".dot"):
        _fail(f"--out must end in .json (EAP-IG graph JSON) or .dot (Graphviz), got {out.name!r}")
    model, ps = _load_with_prompts(spec, prompts, n, seed)
    from interp.circuits import discover, evaluate

    if method is CircuitMethod.acdc:  # selects its edges itself: --threshold is its tau
        if top_n is not None:
            _fail("--method acdc selects its own edges: give --threshold (its tau), not --top-n")
        g = _run(discover, model, ps, method="acdc", metric=metric.value,
                 threshold=0.01 if threshold is None else threshold)
    else:
        g = _run(discover, model, ps, method=method.value, metric=metric.value,
                 ig_steps=ig_steps)
        if threshold is not None:
            g.threshold(threshold)
        else:
            g.top_n(top_n or 200)
    faith = _run(evaluate, model, ps, g, metric=metric.value)
    import json

    import pandas as pd

    names = g.edge_names()
    kept = sorted(g.in_graph.nonzero()[:, 0].tolist(), key=lambda i: -abs(float(g.scores[i])))
    frame = pd.DataFrame({"edge": [names[i] for i in kept],
                          "score": [float(g.scores[i]) for i in kept]})
    print_frame(frame.head(15), f"{method.value}: top edges of {g.n_in_graph} kept "
                f"(of {g.n_edges}; {int(g.nodes_in_graph.sum())} nodes)")
    _console().print(f"faithfulness {faith['faithfulness']:.3f} (circuit {faith['circuit']:.3f}, "
                     f"full model {faith['full']:.3f}, empty {faith['empty']:.3f}; "
                     f"metric {metric.value})")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            doc = g.to_eap_json()
            doc["meta"] = {**{k: v for k, v in g.meta.items() if k != "valid"},
                           "faithfulness": faith}
            out.write_text(json.dumps(doc, indent=1, default=str))
        else:
            out.write_text(g.to_dot())
        _console().print(f"wrote {out}")


@app.command("app")
def run_app(
    model: str = typer.Option("ioi", "--model", "-m", help="model to open with"),
    port: int = typer.Option(8501, "--port"),
    address: str = typer.Option("localhost", "--address"),
):
    """Start the Streamlit Circuit Explorer on localhost.

    Example: `interp app --model induction --port 8502`.
    """
    import importlib.util
    import os
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        _fail("the explorer needs Streamlit: pip install 'interp[app]'")
    entry = Path(__file__).resolve().parent.parent / "app" / "explorer.py"
    env = dict(os.environ, INTERP_MODEL=model)
    cmd = [sys.executable, "-m", "streamlit", "run", str(entry), "--server.address", address,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    raise typer.Exit(subprocess.call(cmd, env=env))


@zoo_app.command("train")
def zoo_train(
    name: str = typer.Argument(..., help="induction, ioi, needle or modadd"),
    minutes: float | None = typer.Option(None, "--minutes", help="training time budget"),
    out: Path | None = typer.Option(None, "--out",
                                    help="output directory (default: ./zoo-runs/NAME)"),
    force: bool = typer.Option(False, "--force",
                               help="write into a non-empty directory, the shipped zoo included"),
):
    """Train a zoo model with its deterministic recipe into a new directory (the shipped
    weights are never overwritten unless --force); the log shows the time left.

    Example: `interp zoo train induction --out /tmp/induction`.
    """
    from interp.models import ZOO, zoo_path
    from interp.models.train.__main__ import main

    if name not in ZOO:
        _fail(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    target = (out or Path.cwd() / "zoo-runs" / name).resolve()
    shipped = zoo_path(name).resolve()
    if not force and target == shipped:
        _fail(f"{target} holds the shipped {name!r} weights; pass --force to overwrite them, or "
              "--out another directory")
    if not force and target.is_dir() and any(target.iterdir()):
        _fail(f"{target} is not empty; pass --force to write into it, or --out a new directory")
    argv = [name, "--out", str(target)]
    if minutes is not None:
        argv += ["--minutes", str(minutes)]
    _console().print(f"training {name!r} into {target}")
    raise typer.Exit(main(argv))


@zoo_app.command("card")
def zoo_card(name: str = typer.Argument(..., help="induction, ioi or needle")):
    """Print a zoo model's card. Example: `interp zoo card ioi`."""
    from interp.models import ZOO, model_card

    if name not in ZOO:
        _fail(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    typer.echo(model_card(name) or f"(no card yet for {name})")
