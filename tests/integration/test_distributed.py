"""interp.distributed: sharded sweeps in-process and on Ray workers.

The merges are checked against the unsharded functions (bit-equal where the shards' cells are
computed exactly as in the full sweep), the Ray results against the local ones (bit-equal: the
same shards, merged the same way), a worker dying mid-sweep, and the errors for a model without
a load spec, an unreachable cluster and a missing Ray.
"""

from __future__ import annotations

import socket
import sys

import pytest
import torch
from helpers import load_tiny

from interp import prompts as P
from interp.ablation import knockout_sweep
from interp.distributed import LocalExecutor, get_executor, model_spec, run
from interp.heads import induction_scores, previous_token_scores
from interp.patching import activation_patching, path_patching
from interp.retrieval import retrieval_scores

RET = {"lengths": [40, 48], "depths": [0, 100], "max_new_tokens": 3, "batch_size": 2}


def _tensors(res) -> dict[str, torch.Tensor]:
    names = ("values", "per_example", "ci", "raw", "raw_per_example", "mlp_values",
             "mlp_per_example", "mlp_ci", "baseline_per_example")
    return {n: getattr(res, n) for n in names if getattr(res, n, None) is not None}


def assert_same(a, b) -> None:
    """Bit-equal tensors, equal labels and equal settings (except the shard bookkeeping)."""
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert ta[name].shape == tb[name].shape, name
        assert torch.equal(ta[name].nan_to_num(7.0), tb[name].nan_to_num(7.0)), name
    assert a.dims == b.dims and a.coords == b.coords
    skip = {"shards", "shard_axis"}
    assert {k: v for k, v in a.meta.items() if k not in skip} == \
        {k: v for k, v in b.meta.items() if k not in skip}


@pytest.fixture(scope="module")
def model(tiny_dirs):
    return load_tiny(tiny_dirs, "gpt2")


@pytest.fixture(scope="module")
def ps(model):
    return P.ioi(model, n=4, seed=2)


CALLS = {
    "activation_patching": lambda m, ps, ex: activation_patching(m, ps, executor=ex),
    "activation_patching_z": lambda m, ps, ex: activation_patching(
        m, ps, target="z", per_position=False, direction="noising", executor=ex),
    "path_patching": lambda m, ps, ex: path_patching(m, ps, receivers=["L2H1"], executor=ex),
    "knockout_sweep": lambda m, ps, ex: knockout_sweep(m, ps, method="mean", executor=ex),
    "retrieval_scores": lambda m, ps, ex: retrieval_scores(m, **RET, executor=ex),
}


_LOCAL: dict[str, object] = {}


def local_result(model, ps, name: str):
    """Each method's result on the local executor, computed once for the module."""
    if name not in _LOCAL:
        _LOCAL[name] = CALLS[name](model, ps, LocalExecutor(progress=False))
    return _LOCAL[name]


@pytest.mark.parametrize("name", CALLS)
def test_local_shards_equal_the_unsharded_function(model, ps, name):
    plain = CALLS[name](model, ps, None)
    local = local_result(model, ps, name)
    assert local.meta["shards"] > 1
    assert_same(plain, local)


def test_head_scores_shard_over_prompts(model):
    plain = induction_scores(model, seq_len=8, batch=6)
    local = induction_scores(model, seq_len=8, batch=6, executor=LocalExecutor(progress=False))
    assert local.meta["shards"] == 2 and local.per_example.shape[-1] == 6
    # per-prompt means then the mean over prompts: equal up to float rounding
    torch.testing.assert_close(local.values, plain.values, rtol=0, atol=1e-6)
    assert local.meta == {**plain.meta, "shards": 2, "shard_axis": "prompts"}


def test_run_by_name_and_the_errors_before_any_work(model, ps):
    a = run("activation_patching", model, executor=LocalExecutor(shard_size=2, progress=False),
            prompts=ps, layers=[2, 0, 1])
    assert a.coords["layer"] == ["L2", "L0", "L1"] and a.meta["shards"] == 2
    assert_same(a, activation_patching(model, ps, layers=[2, 0, 1]))
    with pytest.raises(ValueError, match="cannot be sharded.*knockout_sweep"):
        run("logit_lens", model, prompts=ps)
    with pytest.raises(TypeError, match="activation_patching"):
        run("activation_patching", model, prompts=ps, nonsense=1)
    with pytest.raises(TypeError, match="'local', 'ray'"):
        get_executor("spark")
    with pytest.raises(ValueError, match="shard_size"):
        LocalExecutor(shard_size=0)


# --- Ray --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_ex():
    ray = pytest.importorskip("ray")
    from interp.distributed import RayExecutor

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ex = RayExecutor(n_workers=2, progress=False)
    yield ex
    ex.shutdown()
    if started:
        ray.shutdown()


@pytest.mark.parametrize("name", CALLS)
def test_ray_equals_local(model, ps, ray_ex, name):
    remote = CALLS[name](model, ps, ray_ex)
    local = local_result(model, ps, name)
    assert_same(local, remote)
    assert {w for _, _, w, _ in ray_ex.history} == {0, 1}  # both workers took shards


def test_ray_head_scores_equal_local(model, ray_ex):
    local = previous_token_scores(model, seq_len=8, batch=7, executor="local")
    remote = previous_token_scores(model, seq_len=8, batch=7, executor=ray_ex)
    assert remote.meta["shards"] == 2
    assert_same(local, remote)


def test_a_worker_dying_mid_sweep_loses_nothing(model, ps, ray_ex):
    if not ray_ex.workers():  # workers start on first use: run alone, this test starts them
        knockout_sweep(model, ps, method="mean", executor=ray_ex)
    pids = [p["pid"] for p in ray_ex.workers()]
    before = ray_ex.retried
    ray_ex._die = {(1, 0)}  # the worker holding shard 1 dies on its first attempt
    try:
        remote = knockout_sweep(model, ps, method="mean", executor=ray_ex)
    finally:
        ray_ex._die = set()
    assert ray_ex.retried == before + 1
    lost = [w for _, _, w, what in ray_ex.history if what == "lost"]
    done = {i: w for i, _, w, what in ray_ex.history if what == "done"}
    assert len(lost) == 1 and done[1] != lost[0]  # retried on the other worker
    assert sorted(done) == [0, 1, 2]
    assert_same(local_result(model, ps, "knockout_sweep"), remote)
    # the dead worker came back (a new process, the model reloaded) and computes again
    new_pids = [p["pid"] for p in ray_ex.workers()]
    assert new_pids[lost[0]] != pids[lost[0]] and new_pids[1 - lost[0]] == pids[1 - lost[0]]
    assert_same(local_result(model, ps, "knockout_sweep"),
                knockout_sweep(model, ps, method="mean", executor=ray_ex))


def test_a_bad_argument_fails_as_without_ray(model, ps, ray_ex):
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        activation_patching(model, ps, target="nope", executor=ray_ex)


# --- errors -----------------------------------------------------------------------------------

def test_a_model_without_load_spec_is_refused(model, ps, tiny_dirs):
    from interp.distributed import RayExecutor

    spec = model._interp_spec
    model._interp_spec = None  # as for a model built by hand
    try:
        with pytest.raises(ValueError, match=r"no load spec.*interp.load_model"):
            activation_patching(model, ps, executor=RayExecutor(n_workers=1))
        # the local executor needs no spec: it runs on the caller's model
        assert activation_patching(model, ps, layers=[0], executor="local").meta["shards"] == 1
    finally:
        model._interp_spec = spec
    assert model_spec(model)["spec"] == str(tiny_dirs["gpt2"].resolve())  # workers load this


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_names_the_address(model, ps, monkeypatch):
    from interp.distributed import RayExecutor

    port = _closed_port()
    with pytest.raises(ConnectionError, match=rf"127\.0\.0\.1:{port}.*address argument"):
        activation_patching(model, ps, executor=RayExecutor(address=f"127.0.0.1:{port}"))
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=rf"ray://127\.0\.0\.1:{port}.*RAY_ADDRESS"):
        knockout_sweep(model, ps, executor=RayExecutor())


def test_missing_ray_says_how_to_install(monkeypatch):
    from interp.distributed import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'interp\[distributed\]'"):
        RayExecutor()


# --- exact edge patching, sharded by receiver layer ------------------------------------------

def _exact(model, ps, ex):
    from interp.circuits import discover

    return discover(model, ps, method="exact", executor=ex)


def _assert_same_graph(a, b) -> None:
    assert torch.equal(a.scores, b.scores)
    skip = {"shards", "shard_axis"}
    assert {k: v for k, v in a.meta.items() if k not in skip} == \
        {k: v for k, v in b.meta.items() if k not in skip}


def test_exact_edges_shard_by_receiver_layer(model, ps):
    from interp.circuits import discover

    plain = _exact(model, ps, None)
    local = _exact(model, ps, LocalExecutor(progress=False))
    assert local.meta["shards"] == model.cfg.n_layers + 1  # every layer and the logits port
    _assert_same_graph(plain, local)
    assert (plain.scores != 0).sum() > 10
    one = discover(model, ps, method="exact", receiver_layers=[1])
    into_1 = torch.tensor([p.startswith("a1.") or p == "m1" for p in plain.ports])[plain.edge_dst]
    assert torch.equal(one.scores[into_1], plain.scores[into_1])
    assert (one.scores[~into_1] == 0).all()
    with pytest.raises(ValueError, match="out of range"):
        discover(model, ps, method="exact", receiver_layers=[model.cfg.n_layers + 1])
    with pytest.raises(ValueError, match="method='exact'"):
        discover(model, ps, method="eap", executor="local")


def test_ray_exact_edges_equal_local(model, ps, ray_ex):
    _assert_same_graph(_exact(model, ps, LocalExecutor(progress=False)), _exact(model, ps, ray_ex))
    # each worker runs as many torch threads as CPUs it reserved, whatever the driver's setting
    assert {w["threads"] for w in ray_ex.workers()} == {1}


def test_bad_executor_settings_are_refused_before_any_work():
    from interp.distributed import RayExecutor

    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        RayExecutor(n_workers=0)
    with pytest.raises(ValueError, match="shard_size must be a positive"):
        LocalExecutor(shard_size=0)


def test_a_worker_that_cannot_load_the_model_names_itself(tiny_dirs, tmp_path, ray_ex):
    """The model's directory is gone by the time the workers start: the worker's own error
    (with its host and process) reaches the caller."""
    import shutil

    src = tmp_path / "model"
    shutil.copytree(tiny_dirs["gpt2"], src)
    import interp

    model = interp.load_model(src)
    ps = P.ioi(model, n=2, seed=0)
    shutil.rmtree(src)
    with pytest.raises(RuntimeError, match=f"could not load the model.*worker on "
                                           f"{socket.gethostname()}.*pid .*does not exist"):
        activation_patching(model, ps, per_position=False, executor=ray_ex)
