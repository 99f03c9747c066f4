"""Runs on a Ray cluster: the in-process loop's models, decoding and writer, spread out.

    this process: select jobs from the catalog (keyset pages) → shards of jobs
      → Ray Data   decode + preprocess: CPU tasks (`decode_for_models`, as the local pool)
                   predict: an actor pool, one copy of the models per actor (one GPU
                   each where the cluster has GPUs)
      → results stream back here → the one catalog writer, one transaction per batch.

Only this process touches the catalog: workers get paths and return results. So a
cluster needs the images and model files at the same paths on every node (a shared
mount), never the database; and since the writer, `processed` rows and run records are
the in-process loop's own, a killed or cancelled run resumes exactly as it does there.

The job list (ids and paths, some 100 bytes an image) is read before the first task
starts. A shard whose worker fails is run again by Ray Data: a dead worker process
(crash, OOM kill, lost node) has its task rerun or its actor restarted (Ray Data's own
defaults), and a batch whose worker raises is retried `RETRIES` times before the run
fails with one line. Images a worker cannot decode are recorded problems, as in-process.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curator.errors import CuratorError, UsageError
from curator.progress import RunOutcome, phase
from curator.runs.loop import (
    RunOptions,
    RunSummary,
    _decode_batch,
    _Decoded,
    _Job,
    _Runner,
    load_models,
    predict_models,
    reads_embeddings,
    select_jobs,
)
from db.engine import Catalog
from taggers.base import Model

EXTRA = "pip install 'curator[ray]'"
RETRIES = 2  # runs after the first of a batch whose worker raised an error
# Fractions of a CPU: model actors mostly wait on their device or on decoded input, and
# whole-CPU actors beside whole-CPU decode tasks deadlock a two-core node.
ACTOR_CPUS = 0.5
DECODE_CPUS = 1.0
MAX_SHARD = 1024  # jobs per shard at most: a retried shard redoes at most this many
PICKLE = pickle.HIGHEST_PROTOCOL


def require_ray() -> None:
    """Raise a one-line `UsageError` naming the extra when Ray Data is not installed."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(f"the Ray engine needs the ray extra: {EXTRA}") from None
    if not hasattr(ray.data.DataContext, "max_map_retries"):  # the retry settings used here
        raise UsageError(f"the Ray engine needs Ray 2.60 or later: {EXTRA}")


# --- the cluster ---------------------------------------------------------------------


@dataclass(slots=True)
class Cluster:
    cpus: float
    gpus: float
    address: str


def _code_roots() -> list[str]:
    """The folders this process imports curator, taggers and db from."""
    import curator
    import db
    import taggers

    return [str(Path(m.__file__).resolve().parent) for m in (curator, taggers, db)]


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing answers at, at once: Ray itself retries for minutes."""
    if address == "auto":
        return
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = address.removeprefix("ray://"), "10001" if client else "6379"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise CuratorError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
            "(is `ray start --head` running there, and the port open?)"
        ) from None


def _init_args(address: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # worker output would break the progress bar
        "logging_level": logging.ERROR,
    }
    if address or os.environ.get("RAY_ADDRESS"):
        # Workers run the same code as this process: our packages travel with the job
        # (cached by content on the cluster); their dependencies must be installed there.
        args["address"] = address
        args["runtime_env"] = {"py_modules": _code_roots()}
    else:
        # One machine. Resources are logical: at least two CPUs leave room for a
        # decode task beside a model actor on any machine.
        args["num_cpus"] = max(2, os.cpu_count() or 1)
        parent = os.path.dirname(_code_roots()[0])
        path = os.pathsep.join(p for p in (parent, os.environ.get("PYTHONPATH")) if p)
        args["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    return args


@contextmanager
def cluster(address: str | None = None) -> Iterator[Cluster]:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start Ray on this machine.

    A Ray connection this process already has is used as it is and left open; one
    started here is shut down on the way out.
    """
    require_ray()
    import ray

    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        _check_reachable(target)
    started = False
    if not ray.is_initialized():
        try:
            ray.init(**_init_args(address))
        except Exception as exc:  # noqa: BLE001 - connection errors of every kind: one line
            where = f"join the Ray cluster at {target}" if target else "start Ray on this machine"
            raise CuratorError(f"cannot {where}: {_one_line(exc)}") from None
        started = True
    try:
        resources = ray.cluster_resources()
        yield Cluster(
            float(resources.get("CPU", 0)),
            float(resources.get("GPU", 0)),
            ray.get_runtime_context().gcs_address,
        )
    finally:
        if started:
            ray.shutdown()


# --- what runs on the workers --------------------------------------------------------


def _decode_shard(batch: Any, models: Sequence[Model]) -> dict[str, list[bytes]]:
    """Decode and preprocess a batch of jobs (a CPU task)."""
    jobs: list[_Job] = [pickle.loads(b) for b in batch.column("job").to_pylist()]
    decoded = _decode_batch(jobs, models)
    # Model inputs are whatever `preprocess` returns (arrays in the model's dtype, dicts):
    # pickled, they reach the model byte for byte, whatever Arrow would make of them.
    pairs = zip(jobs, decoded, strict=True)
    return {"record": [pickle.dumps((j.needs, d), PICKLE) for j, d in pairs]}


class _Predictor:
    """One model worker: the run's models, loaded once, predicting batch after batch."""

    MODELS: tuple[Model, ...] = ()

    def __init__(self) -> None:
        self.models = list(self.MODELS)
        self.loaded = False

    def __call__(self, batch: Any) -> dict[str, list[bytes]]:
        if not self.loaded:
            # Here rather than in __init__: a model that cannot load on this node is a
            # batch's error (retried, then the run's one-line error), not a dead actor.
            load_models(self.models)
            self.loaded = True
        records = [pickle.loads(b) for b in batch.column("record").to_pylist()]
        decoded: list[_Decoded] = [d for _, d in records]
        items = predict_models(self.models, decoded)
        by_image: dict[int, list] = {}
        for item in items:
            by_image.setdefault(item.image_id, []).append(item)
        out = []
        for needs, d in records:
            d.inputs = {}  # pixels stay here: only results travel back
            out.append(pickle.dumps((needs, d, by_image.get(d.image_id, [])), PICKLE))
        return {"record": out}


# --- this process ------------------------------------------------------------------


def _predictor(models: Sequence[Model]) -> type[_Predictor]:
    """A predictor class carrying the run's models: the class travels to each actor
    itself, so no constructor argument waits in the object store for a restart."""
    return type("Predictor", (_Predictor,), {"MODELS": tuple(models)})


def _shards(jobs: Iterator[_Job], rows: int) -> list[Any]:
    """Arrow tables of `rows` pickled jobs each: the dataset's blocks."""
    import pyarrow as pa

    shards, current = [], []
    for job in jobs:
        current.append(pickle.dumps(job, PICKLE))
        if len(current) >= rows:
            shards.append(pa.table({"job": pa.array(current, pa.binary())}))
            current = []
    if current:
        shards.append(pa.table({"job": pa.array(current, pa.binary())}))
    return shards


def shard_rows(todo: int, batch_size: int, cpus: float) -> int:
    """Jobs per shard: a few shards per CPU for balance, whole model batches, and small
    enough that a retried shard redoes little."""
    per_cpu = math.ceil(todo / max(1.0, cpus * 4) / batch_size)
    return batch_size * max(1, min(per_cpu, max(1, MAX_SHARD // batch_size)))


def model_workers(options: RunOptions, found: Cluster) -> tuple[int, float]:
    """(actors, GPUs per actor): `workers`, else one per GPU, else one per two CPUs."""
    gpus = options.worker_gpus
    if gpus is None:
        gpus = 1.0 if found.gpus >= 1 else 0.0
    if options.workers:
        actors = options.workers
    elif gpus:
        actors = max(1, int(found.gpus // gpus))
    else:
        actors = max(1, int(found.cpus // 2))
    if gpus * actors > found.gpus:
        raise UsageError(
            f"{actors} model workers with {gpus:g} GPU each need {gpus * actors:g} GPUs; "
            f"the cluster has {found.gpus:g}"
        )
    return actors, gpus


def _configure(ctx: Any) -> None:
    """Ray Data settings for a run: quiet, and retries bounded on both stages."""
    ctx.enable_progress_bars = False  # the Reporter shows progress
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    # An error raised in a worker: the shard's batch is run again in place. A worker
    # that dies (crash, OOM kill, lost node): Ray Data reruns its task or restarts the
    # actor and resubmits, its own defaults.
    ctx.retried_map_errors = True
    ctx.max_map_retries = RETRIES
    ctx.raise_original_map_exception = True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _errors(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: Ray's `cause`, then Python's chain."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = (getattr(e, "cause", None), e.__cause__, e.__context__)
        todo += [x for x in wrapped if isinstance(x, BaseException)]


def _run_error(exc: BaseException) -> BaseException:
    """The one-line error for a failed Ray execution: the worker's own error where it
    was one of ours (a model's `TaggerError`, as in-process), else what Ray says last."""
    from ray.exceptions import RayError

    from taggers.errors import TaggerError

    for e in _errors(exc):
        # Not Ray's wrapper (which also passes for the error it wraps): what it wraps.
        if isinstance(e, CuratorError | TaggerError) and not isinstance(e, RayError):
            if e.args and isinstance(e.args[0], str):  # less Ray Data's retry note
                e.args = (e.args[0].split("\n", 1)[0], *e.args[1:])
            return e
    # Ray puts a dead worker's traceback in its message; the last line names the error.
    lines = [
        line.strip()
        for e in _errors(exc)
        for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines()
        if line.strip() and set(line.strip()) != {"^"}
    ]
    return CuratorError(f"the Ray cluster failed the run: {lines[-1] if lines else _one_line(exc)}")


@contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's console log off during a run (it logs each execution's plan at INFO and
    a worker's traceback at ERROR): a run shows its progress bar, summary or one-line
    error. Its log file in the Ray session folder keeps everything."""
    handlers = [h for h in logging.getLogger("ray.data").handlers if h.name == "console"]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def _pipeline(  # noqa: ANN001
    runner: _Runner, jobs: Iterator[_Job], todo: int, found: Cluster, workers: tuple, bar
) -> None:
    import ray
    import ray.data

    options = runner.options
    actors, gpus = workers
    shards = _shards(jobs, shard_rows(todo, options.batch_size, found.cpus))
    if not shards:
        return
    ds = ray.data.from_blocks(shards)
    del shards
    _configure(ds.context)
    ds = ds.map_batches(
        _decode_shard,
        fn_kwargs={"models": runner.models},
        batch_size=options.batch_size,
        batch_format="pyarrow",
        num_cpus=DECODE_CPUS,
    ).map_batches(
        _predictor(runner.models),
        batch_size=options.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ACTOR_CPUS,
        num_gpus=gpus or None,
    )
    batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - whatever the cluster raised: one line
                raise _run_error(exc) from None
            if options.cancel is not None:
                options.cancel.check()
            records = [pickle.loads(b) for b in batch.column("record").to_pylist()]
            decoded = [d for _, d, _ in records]
            items = [item for _, _, found_items in records for item in found_items]
            jobs_by_id = {d.image_id: _Job(d.image_id, d.path, needs) for needs, d, _ in records}
            runner.store(decoded, items, jobs_by_id)
            bar.advance(len(records))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def run_on_ray(
    catalog: Catalog,
    models: Sequence[Model],
    options: RunOptions,
    *,
    kind: str = "tag",
) -> list[RunSummary]:
    """`run_models` on a Ray cluster: same selection, models, writer and run records."""
    require_ray()
    if options.max_tags < 1:
        raise ValueError("max_tags must be at least 1")
    for model in models:
        if reads_embeddings(model):
            raise UsageError(
                f"{model.name} reads stored embeddings, not images: run it with the local engine"
            )
    load_models(models)
    with cluster(options.address) as found, _quiet_ray_data():
        workers = model_workers(options, found)
        runner = _Runner(catalog, models, options)
        todo, done_before, jobs = select_jobs(catalog, models, options)
        runner.start(kind)
        for summary in runner.summaries:
            summary.skipped = done_before
        start = time.monotonic()
        outcome = RunOutcome()
        try:
            with outcome.track(), phase(options.reporter, f"{kind} on Ray", todo) as bar:
                _pipeline(runner, jobs, todo, found, workers, bar)
        finally:
            runner.finish(outcome.status, time.monotonic() - start)
    return runner.summaries
