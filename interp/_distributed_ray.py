"""The Ray executor: one actor per worker holding one model replica; shards are its tasks."""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any, Self

from interp.distributed import _check_size, import_ray, model_spec


class _Worker:
    """A Ray actor: loads the model once from its spec, then computes shards on it."""

    def __init__(self, spec: dict[str, Any], threads: int | None = None) -> None:
        from interp.models import load_model

        if threads:  # Ray sets OMP_NUM_THREADS only when the driver has not: oversubscription
            import torch

            torch.set_num_threads(threads)
        spec = dict(spec)
        try:
            self.model = load_model(spec.pop("spec"), **spec)
        except Exception as e:  # noqa: BLE001  (reported to the driver with this worker's address)
            host = socket.gethostname()
            try:
                ip = socket.gethostbyname(host)
            except OSError:
                ip = "?"
            raise RuntimeError(f"worker on {host} ({ip}), pid {os.getpid()}: "
                               f"{type(e).__name__}: {e}") from None

    def ready(self) -> dict[str, Any]:
        import torch

        return {"host": socket.gethostname(), "pid": os.getpid(),
                "device": str(self.model.cfg.device), "threads": torch.get_num_threads()}

    def compute(self, method: str, kwargs: dict[str, Any], items: list[int], die: bool = False):
        if die:  # fault injection for tests: the worker process dies holding this shard
            os._exit(1)
        from interp._distributed_plans import PLANS

        return PLANS[method].compute(self.model, kwargs, items)


def _reachable(address: str, source: str) -> None:
    """Fail fast, naming the address, when nothing listens there (ray.init would wait long)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and friends: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address!r} (from {source}): {e}. Start the head "
            "node with `ray start --head` and pass the address it prints, or pass address=None "
            "and unset RAY_ADDRESS to start a local cluster on this machine.") from None


class RayExecutor:
    """Shards on Ray workers, one model replica each.

    ``n_workers``: actors to start (default: as many as the cluster's CPUs, or GPUs with
    ``num_gpus_per_worker``, allow, at most one per shard); ``num_cpus_per_worker`` /
    ``num_gpus_per_worker``: Ray resources each actor reserves (a fraction of a GPU shares it);
    ``address``: the cluster (default ``RAY_ADDRESS``, else a local cluster is started; an
    already connected Ray is used as is); ``max_retries``: times a shard is given to another
    worker after its worker died; ``device``: the workers' device (default ``"cuda"`` with GPUs,
    else the device the model was loaded on); ``shard_size`` and ``progress`` as for
    :class:`interp.distributed.LocalExecutor`. The workers stay up for later calls with the same
    model; :meth:`shutdown` (or ``with RayExecutor(...) as ex:``) stops them."""

    def __init__(self, n_workers: int | None = None, *, num_gpus_per_worker: float = 0,
                 num_cpus_per_worker: float = 1, address: str | None = None,
                 max_retries: int = 2, device: str | None = None, shard_size: int | None = None,
                 progress: bool = True) -> None:
        import_ray()
        if n_workers is not None and int(n_workers) < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.n_workers = None if n_workers is None else int(n_workers)
        self.num_gpus_per_worker = float(num_gpus_per_worker)
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.address = address
        self.max_retries = int(max_retries)
        self.device = device
        self.shard_size = _check_size(shard_size)
        self.progress = progress
        self.retried = 0  # shards given to another worker after a worker died (all calls)
        self.history: list[tuple[int, int, int, str]] = []  # last call: (shard, attempt, worker,
        # "done" or "lost")
        self._actors: list = []
        self._key: Any = None
        self._die: set[tuple[int, int]] = set()  # (shard, attempt) whose worker dies: tests

    # --- cluster and workers -------------------------------------------------------------------
    def _connect(self):
        ray = import_ray()
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        source = "the address argument" if self.address else "RAY_ADDRESS"
        if address:
            _reachable(address, source)
        if ray.is_initialized():
            return ray
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as e:  # noqa: BLE001  (refused, timed out, version mismatch...)
            where = f"at {address!r} (from {source})" if address else "(a local cluster)"
            raise ConnectionError(f"could not start or join a Ray cluster {where}: "
                                  f"{type(e).__name__}: {e}") from None
        return ray

    def _worker_spec(self, model) -> dict[str, Any]:
        spec = model_spec(model)
        device = self.device
        if device is None:
            device = "cuda" if self.num_gpus_per_worker > 0 else str(spec.get("device") or "cpu")
            if device.startswith("cuda") and self.num_gpus_per_worker == 0:
                raise ValueError("the model was loaded on a GPU but num_gpus_per_worker=0, so "
                                 "the workers get none; pass num_gpus_per_worker=1 (or a "
                                 "fraction), or device='cpu'.")
        if device.startswith("cuda:") and self.num_gpus_per_worker > 0:
            device = "cuda"  # Ray gives each worker its own GPU(s), visible as cuda:0
        spec["device"] = device
        return spec

    def _pool(self, ray, spec: dict[str, Any], n_shards: int) -> list:
        key = repr(sorted(spec.items()))
        if key != self._key:
            self.shutdown()
            self._key = key
        want = self.n_workers
        if want is None:
            res = ray.cluster_resources()
            want = int(res.get("GPU", 0) // self.num_gpus_per_worker if self.num_gpus_per_worker
                       else res.get("CPU", 1) // max(self.num_cpus_per_worker, 1e-9))
        want = max(1, min(want, n_shards))
        if len(self._actors) < want:
            cls = ray.remote(_Worker).options(
                num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker,
                max_restarts=self.max_retries, max_task_retries=0)
            threads = max(1, int(self.num_cpus_per_worker))  # torch threads = CPUs reserved
            new = [cls.remote(spec, threads) for _ in range(want - len(self._actors))]
            try:
                ray.get([a.ready.remote() for a in new])
            except Exception as e:  # noqa: BLE001  (any load failure, reported below)
                for a in new:
                    ray.kill(a, no_restart=True)
                lines = [ln.strip() for ln in str(e).splitlines() if "worker on " in ln]
                why = lines[-1].removeprefix("RuntimeError: ") if lines else str(e)
                raise RuntimeError(f"a Ray worker could not load the model {spec['spec']!r} on "
                                   f"{spec['device']!r}: {why}") from None
            self._actors += new
        return self._actors[:want]

    def workers(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Host, process id, device and torch threads of each worker (waits for restarts)."""
        import time

        ray = import_ray()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return ray.get([a.ready.remote() for a in self._actors])
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def shutdown(self) -> None:
        """Stop this executor's workers (Ray itself stays connected)."""
        if self._actors:
            ray = import_ray()
            for a in self._actors:
                ray.kill(a, no_restart=True)
        self._actors, self._key = [], None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # --- shards --------------------------------------------------------------------------------
    def map(self, model, method: str, kwargs: dict[str, Any], shards: list[list[int]]) -> list:
        from tqdm.auto import tqdm

        ray = self._connect()
        spec = self._worker_spec(model)
        actors = self._pool(ray, spec, len(shards))
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError)
        kw_ref = ray.put(kwargs)  # prompts travel once, not once per shard
        queue = deque((i, 0, None) for i in range(len(shards)))  # (shard, attempt, failed on)
        free = list(range(len(actors)))
        running: dict[Any, tuple[int, int, int]] = {}
        self.history = []
        out: list[Any] = [None] * len(shards)
        bar = tqdm(total=len(shards), unit="shard", disable=not self.progress,
                   desc=f"{method} ({len(shards)} shards, {len(actors)} Ray workers)")
        try:
            while queue or running:
                for a in list(free):  # a retried shard goes to another worker when there is one
                    task = next((t for t in queue if t[2] != a or len(actors) == 1), None)
                    if task is None:
                        continue
                    queue.remove(task)
                    free.remove(a)
                    i, attempt, _ = task
                    ref = actors[a].compute.remote(method, kw_ref, shards[i],
                                                   (i, attempt) in self._die)
                    running[ref] = (i, attempt, a)
                (ref,), _ = ray.wait(list(running), num_returns=1)
                i, attempt, a = running.pop(ref)
                free.append(a)
                try:
                    out[i] = ray.get(ref)
                    self.history.append((i, attempt, a, "done"))
                except lost as e:
                    self.history.append((i, attempt, a, "lost"))
                    if attempt >= self.max_retries:
                        raise RuntimeError(f"shard {i} of {method} was lost with its worker "
                                           f"{attempt + 1} times; last: {e}") from None
                    self.retried += 1
                    queue.append((i, attempt + 1, a))
                    continue
                bar.update(1)
        finally:
            bar.close()
        return out

    def __repr__(self) -> str:
        return (f"RayExecutor(n_workers={self.n_workers}, num_gpus_per_worker="
                f"{self.num_gpus_per_worker}, num_cpus_per_worker={self.num_cpus_per_worker}, "
                f"address={self.address!r}, max_retries={self.max_retries})")
