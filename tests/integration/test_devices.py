"""Devices and dtypes without a GPU.

*Device hygiene.* On a GPU every tensor a method makes without naming a device lands on the CPU
and then meets the model's CUDA tensors. The same mistake is caught here on the CPU: the
methods run with ``torch.device("meta")`` as the default device, so any tensor created without
an explicit device (or moved with ``torch.as_tensor``) becomes a data-less meta tensor, and
mixing it with the CPU model's tensors, or reading a number from it, raises. A method that
passes computed on the model's device throughout, and kept its CPU-side results explicit.

*bfloat16.* The main methods run on a bfloat16 copy of trained zoo models and are compared with
the float32 run: results come back in float32 and agree within the precision bfloat16 allows
(stated tolerance below, relative to the result's largest magnitude).
"""

from __future__ import annotations

import os

import pytest
import torch

import interp
from interp import ablation, attribution, circuits, heads, lens, patching, retrieval
from interp.prompts import PromptSpec

DEVICE = os.environ.get("INTERP_TEST_DEVICE")  # make gpu-check: cuda


@pytest.fixture(scope="module")
def ioi():
    model = interp.load_model("ioi", device=DEVICE)
    return model, PromptSpec("ioi", n=8).build(model)


def _methods(model, ps):
    return {
        "patch_z": lambda: patching.activation_patching(model, ps, target="z"),
        "patch_resid_by_pos": lambda: patching.activation_patching(model, ps, target="resid_pre"),
        "path_patching": lambda: patching.path_patching(model, ps),
        "attribution_patching": lambda: attribution.attribution_patching(model, ps, target="z"),
        "logit_lens": lambda: lens.logit_lens(model, ps),
        "dla": lambda: lens.direct_logit_attribution(model, ps),
        "knockout_sweep": lambda: ablation.knockout_sweep(model, ps),
        "ablate_mean": lambda: ablation.ablate(model, ps, ["L0H1", "MLP1"], method="mean"),
        "head_importance": lambda: ablation.head_importance(model, ps),
        "prune_heads": lambda: ablation.prune_heads(model, ps),
        "direct_vs_total": lambda: ablation.direct_vs_total(model, ps),
        "previous_token_heads": lambda: heads.detect_heads(model, ps.clean_tokens, "previous_token"),
        "edge_attribution": lambda: attribution.edge_attribution(model, ps),
        "discover_eap": lambda: circuits.discover(model, ps, method="eap"),
        "discover_exact": lambda: circuits.discover(model, ps, method="exact"),
    }


METHODS = list(_methods(None, None))


@pytest.mark.parametrize("name", METHODS)
def test_method_makes_no_tensor_off_the_model_device(ioi, name):
    model, ps = ioi
    fn = _methods(model, ps)[name]
    with torch.device("meta"):
        out = fn()
    values = getattr(out, "values", None)
    if values is None:
        values = out.scores
    assert values.device.type == "cpu" and torch.isfinite(values).all()


def test_retrieval_makes_no_tensor_off_the_model_device():
    model = interp.load_model("needle", device=DEVICE)
    with torch.device("meta"):
        scores = retrieval.retrieval_scores(model, lengths=[120], depths=[0, 100])
        masked = retrieval.masking_experiment(model, heads=["L1H0"], n_random=1, lengths=[120],
                                              depths=[50])
    assert scores.values.device.type == "cpu" and masked.values.device.type == "cpu"


# --------------------------------------------------------------------------------------------
# bfloat16 against float32
# --------------------------------------------------------------------------------------------

# bfloat16 keeps 8 significant bits (relative rounding 2^-8 = 0.4%) at every step; through a
# 4-layer model that compounds to about 1% of a result's scale. Head importance is min-max
# normalised gradients, the most sensitive: 10%.
BF16_TOL = {"head_importance": 0.10}
BF16_DEFAULT_TOL = 0.05


@pytest.fixture(scope="module")
def pair():
    out = {}
    for name in ("ioi", "induction"):
        m32 = interp.load_model(name, device=DEVICE)
        m16 = interp.load_model(name, device=DEVICE, dtype="bfloat16")
        out[name] = (m32, m16, PromptSpec(name, n=8).build(m32))
    return out


BF16_METHODS = ["patch_z", "path_patching", "attribution_patching", "logit_lens", "dla",
                "knockout_sweep", "head_importance", "direct_vs_total", "edge_attribution", "discover_eap",
                "discover_exact"]


@pytest.mark.parametrize("model_name", ["ioi", "induction"])
@pytest.mark.parametrize("name", BF16_METHODS)
def test_bfloat16_matches_float32(pair, model_name, name):
    m32, m16, ps = pair[model_name]
    assert next(m16.parameters()).dtype == torch.bfloat16
    a, b = _methods(m32, ps)[name](), _methods(m16, ps)[name]()
    va = a.values if hasattr(a, "values") else a.scores
    vb = b.values if hasattr(b, "values") else b.scores
    assert vb.dtype == torch.float32, "metrics and results are computed in float32"
    scale = float(va.abs().max())
    err = float((va - vb).abs().max())
    assert scale > 0
    assert err <= BF16_TOL.get(name, BF16_DEFAULT_TOL) * scale, (err, scale)
    if name in ("patch_z", "knockout_sweep", "dla"):
        # the component that matters most is the same one
        assert int(va.abs().argmax()) == int(vb.abs().argmax())


def test_bfloat16_metric_baselines_are_float32(pair):
    m32, m16, ps = pair["ioi"]
    a = patching.activation_patching(m32, ps, target="z")
    b = patching.activation_patching(m16, ps, target="z")
    for key in ("clean", "corrupted"):
        assert abs(a.meta[key] - b.meta[key]) <= 0.02 * abs(a.meta[key]) + 0.05


# --------------------------------------------------------------------------------------------
# device selection
# --------------------------------------------------------------------------------------------


def test_device_auto_resolves_to_an_available_device():
    from interp.models import resolve_device

    got = resolve_device("auto")
    want = "cuda" if torch.cuda.is_available() else (
        "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        else "cpu")
    assert got == want
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu7")


def test_device_map_passes_through_and_conflicts_are_refused(tiny_dirs):
    from interp.models import ModelLoadError

    m = interp.load_model(tiny_dirs["gpt2"], device_map={"": "cpu"})
    assert next(m.parameters()).device.type == "cpu"
    assert m.cfg.device is not None
    with pytest.raises(ModelLoadError, match="device_map"):
        interp.load_model(tiny_dirs["gpt2"], device="cpu", device_map="auto")
