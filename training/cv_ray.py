"""`train --cv K --ray [ADDRESS]` and the screens (`--cv-only N`): each fold a Ray task on any node of a cluster.

A fold runs as `training.crossval.run_fold` runs it in one process, in a fresh worker process of its own (one
TensorFlow, `--fold-cpus` threads), and writes to STORAGE/cv/fold-N: the layout one machine writes under its
checkpoint folder, so `summarize` pools it into the same out-of-fold report and `python -m training.cv_report
--checkpoint-dir STORAGE` reads it unchanged. STORAGE must be one folder every node and this machine reach at
the same path (NFS, a cluster file system): the folds write their per-epoch checkpoints there and this process
reads their predictions back.

A fold whose node is lost is retried by Ray (MAX_RETRIES) on another node, and continues from its last
finished epoch: every attempt runs with `resume`, so `fit` restores BackupAndRestore's epoch checkpoint and
appends to history.csv, and `EpochPredictions` overwrites the rows from that epoch on. Each attempt appends
the node it ran on and the epoch it started from to fold-N/ray-attempts.jsonl.

The data set travels once through Ray's object store, so only the driver needs the images.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import keras
import ray
import tensorflow as tf

from service.core.ray_cluster import connect
from training.crossval import check_same_folds, fold_paths, run_fold
from training.data import DataError, LabelledImages
from training.fit import FitSettings, read_history
from training.folds import Fold

log = logging.getLogger(__name__)
# Ray's default for tasks, named: a fold outlives this many lost nodes (or killed worker processes).
MAX_RETRIES = 3


def attempts_path(root: Path, number: int) -> Path:
    return fold_paths(root, number).root / "ray-attempts.jsonl"


def _limit_threads(threads: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow has started in this process already: its thread pools stay
        log.warning("TensorFlow already initialised; its thread counts are left as they are")


@ray.remote(max_calls=1, max_retries=MAX_RETRIES, scheduling_strategy="SPREAD")
def _fold_task(
    data: LabelledImages, fold: Fold, total: int, settings: FitSettings, root: Path,
    build_model: Callable[[], keras.Model], policy: str, threads: int,
) -> str:
    """One fold on this node; returns the node's id. max_calls=1: a fresh process (and TensorFlow) per fold."""
    _limit_threads(threads)
    keras.mixed_precision.set_global_policy(policy)
    node = ray.get_runtime_context().get_node_id()
    paths = fold_paths(root, fold.number)
    paths.root.mkdir(parents=True, exist_ok=True)
    record = {"node": node, "from_epoch": len(read_history(paths.checkpoints.history)), "started": time.time()}
    with attempts_path(root, fold.number).open("a") as attempts:
        attempts.write(json.dumps(record) + "\n")
    if not paths.done.exists():  # an attempt lost after the fold finished has nothing left to do
        run_fold(data, fold, total, settings, root, build_model)
    return node


def run_folds_on_ray(
    data: LabelledImages,
    folds: list[Fold],
    settings: FitSettings,
    root: Path,
    build_model: Callable[[], keras.Model],
    only: int | None = None,
    *,
    address: str | None = None,
    fold_cpus: float = 1.0,
) -> list[int]:
    """`training.crossval.run_folds` with the folds as Ray tasks, all at once; returns the fold numbers run."""
    check_same_folds(root, folds, settings.resume)
    chosen = folds[:only] if only else folds
    started = connect(address)
    try:
        data_ref = ray.put(data)
        policy = keras.mixed_precision.global_policy().name
        threads = max(1, int(fold_cpus))
        pending = {}
        for fold in chosen:
            paths = fold_paths(root, fold.number)
            if settings.resume and paths.done.exists():
                log.info("fold %d of %d already done", fold.number, len(folds))
                continue
            if not settings.resume:  # what run_fold and fit clear without --resume, cleared once here
                shutil.rmtree(paths.root, ignore_errors=True)
            # Every attempt resumes, so one retried after its node was lost continues from its last epoch.
            pending[fold.number] = _fold_task.options(num_cpus=fold_cpus).remote(
                data_ref, fold, len(folds), replace(settings, resume=True), root, build_model, policy, threads,
            )  # fmt: skip
        log.info("folds %s sent to the cluster (%s CPUs each)", sorted(pending), fold_cpus)
        for number, ref in pending.items():
            try:
                node = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, DataError):
                    raise exc.cause from None
                raise
            log.info("fold %d of %d done on node %s", number, len(folds), node[:12])
    finally:
        if started:
            ray.shutdown()
    for fold in chosen:
        if not fold_paths(root, fold.number).done.exists():
            raise DataError(
                f"fold {fold.number} finished on the cluster but {fold_paths(root, fold.number).done} is not "
                "here: --storage must be a folder every node and this machine reach at the same path"
            )
    return [fold.number for fold in chosen]
