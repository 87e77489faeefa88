"""Classifying a folder with Ray Data: the records of :mod:`core.batch`, computed on a Ray cluster.

The file list becomes a Ray dataset; ``map_batches`` runs it through a pool of
actors that each hold one loaded model (:class:`RecordMaker`), and the records
stream back to this process, which journals them exactly as a local run does.
So outputs, resume and bad-input handling are the same; only where the work
runs changes.

Without an address (and without ``RAY_ADDRESS`` set) a local Ray instance is
started for the run and stopped after it. On a cluster every node needs the
toolkit's packages (start ``ray start`` from its virtualenv) and must see the
recordings and the model directory at the same paths; the ``core`` package
itself is shipped by Ray.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .batch import Settings, file_record

FILES_PER_BATCH = 4   # records reach the journal a batch at a time; a crash recomputes at most these per actor


class RecordMaker:
    """A Ray Data actor: loads the model once, then turns batches of recordings into JSON records."""

    def __init__(self, settings: Settings):
        self.settings, self.clf = settings, settings.classifier()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [json.dumps(file_record(self.clf, path, rel, self.settings))
                   for path, rel in zip(batch["path"], batch["file"])]
        return {"record": np.array(records, dtype=object)}


def classify_with_ray(root, rels: Sequence[str], settings: Settings, workers: int | None = None,
                      address: str | None = None) -> Iterator[dict]:
    """Yield a record per recording, in the order Ray finishes them.

    Parameters
    ----------
    root, rels
        The folder and the recordings below it to classify (see :func:`core.batch.list_recordings`).
    settings
        Model and windows; ``settings.model_dir`` must be absolute (actors run elsewhere).
    workers
        Actors, one CPU each (default: every CPU of the cluster).
    address
        A running cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None starts a local one.
    """
    import ray
    import ray.data
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=workers if address is None else None, include_dashboard=False,
                 logging_level=logging.WARNING, runtime_env={"py_modules": [str(Path(__file__).parent)],
                                                                 "excludes": ["__pycache__/", ".cache/"]})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False   # core.batch.commit shows progress
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        if not rels:
            return
        items = [{"path": str((Path(root) / rel).resolve()), "file": rel} for rel in rels]
        records = ray.data.from_items(items).map_batches(
            RecordMaker, fn_constructor_args=(settings,), batch_size=FILES_PER_BATCH, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers or int(ray.cluster_resources()["CPU"])), num_cpus=1)
        for batch in records.iter_batches(batch_size=None):
            yield from (json.loads(line) for line in batch["record"])
    finally:
        if started:
            ray.shutdown()
