"""Classifying a folder of recordings: worker processes, and a journal that makes a run resumable.

A run lists the recordings under a folder and classifies those its journal does
not hold yet, in parallel. Each finished recording's *record* is appended to the
journal the moment it comes back: one JSON line, flushed at once and fsynced
every second. Outputs are rebuilt from the journal in file order, so a run killed
at any point and started again with the same command loses nothing and writes
the same bytes as a run that was never interrupted.

A record holds what the model said about one recording, before any labelling
decision (labels, thresholds and formats are applied when outputs are written):
the class probabilities and open-set score of the file and of each window
(scores are null for a model without open-set statistics)::

    {"file": "site1/rec.wav", "probabilities": [...], "ood_score": 0.2,
     "windows": [[start_s, end_s, [...], ood_score], ...]}
    {"file": "site1/bad.wav", "error": "not readable as audio (...)"}

``file`` is the path below the folder, with ``/`` separators, so the folder may
move between a crash and the restart.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .audio import AudioError, is_audio_file
from .backends import FILES
from .inference import Classifier, Ensemble, Recording, Window, WindowClassifier
from .reports import atomic_write

JOURNAL_VERSION = 1
FSYNC_SECONDS = 1.0         # the journal is forced to the disk at least this often
IN_FLIGHT_PER_WORKER = 2   # files queued per worker: enough to keep it busy, few enough to bound memory


class RunInterrupted(RuntimeError):
    """A worker died; ``str()`` is one line naming the recordings it may have been reading."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a record depends on besides the recording itself (picklable, for workers).

    ``models`` are the (model directory, backend) pairs of the classifier:
    one, or the members of an ensemble (:class:`core.inference.Ensemble`).
    ``reject`` and ``threshold`` are its open-set rule: a recording's
    probabilities are the mean over the windows it accepts.
    """
    models: tuple[tuple[str, str], ...]
    window_seconds: float | None = None
    hop_seconds: float | None = None
    reject: bool = True
    threshold: float | None = None

    @classmethod
    def of(cls, clf: WindowClassifier, *args, **kwargs) -> Settings:
        """The settings of a loaded classifier (its directories made absolute, for workers that run elsewhere)."""
        return cls(tuple((str(m.model_dir.resolve()), m.backend) for m in clf.members), *args, **kwargs)

    def classifier(self) -> WindowClassifier:
        """The model, loaded silently: the main process has already said what loading it has to say."""
        with contextlib.redirect_stderr(io.StringIO()):
            if len(self.models) == 1:
                return Classifier(*self.models[0], self.reject, self.threshold)
            return Ensemble([Classifier(*model) for model in self.models], self.reject)

    def key(self) -> str:
        """Hash of these settings and of the models' files (config, network, open-set arrays).

        A journal is reused only under the same key, so a retrained model never
        mixes its records with an older one's.
        """
        h = hashlib.sha1(json.dumps([JOURNAL_VERSION, [backend for _, backend in self.models], self.window_seconds,
                                     self.hop_seconds, self.reject, self.threshold]).encode())
        for model_dir, backend in self.models:
            model_dir = Path(model_dir)
            for path in [model_dir / "config.json", model_dir / FILES[backend], *sorted(model_dir.rglob("*.npy"))]:
                h.update(path.read_bytes())
        return h.hexdigest()[:16]


def list_recordings(root) -> list[str]:
    """Paths below ``root`` (``/``-separated, sorted) of every audio file in it, searched recursively."""
    root = Path(root)
    return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file() and is_audio_file(p)]


def file_record(clf: Classifier, path, rel: str, settings: Settings) -> dict:
    """Classify one recording into a record; an unreadable one gives an error record.

    Warnings the decoder prints (a truncated file, say) are captured into
    ``record["warnings"]``, so the process that keeps the journal prints them,
    whichever process did the work.
    """
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        try:
            result = clf.classify(path, settings.window_seconds, settings.hop_seconds)
            record = {"file": rel, "probabilities": result.probs.tolist(), "ood_score": result.ood_score,
                      "windows": [[w.start, w.end, w.probs.tolist(), w.ood_score] for w in result.windows]}
        except AudioError as e:
            record = {"file": rel, "error": e.problem}
    record["warnings"] = printed.getvalue().splitlines()
    return record


def recording_of(record: dict) -> Recording:
    """The classified recording a (non-error) record holds, as :meth:`Classifier.classify` returned it."""
    windows = [Window(start, end, np.asarray(probs), score) for start, end, probs, score in record["windows"]]
    return Recording(np.asarray(record["probabilities"]), record["ood_score"], windows)


def audio_seconds(record: dict) -> float:
    """Length of the recording a record covers (0 for an error record)."""
    return record["windows"][-1][1] if record.get("windows") else 0.0


# ---------------------------------------------------------------- the journal

class Journal:
    """Records of finished recordings, one JSON line each, behind a header line holding the run's key.

    Opening an existing journal with the same key resumes it; with another key
    (another model, other window settings) or ``resume=False`` it starts over.
    A line cut short by a crash is dropped when the journal is reopened.
    """

    def __init__(self, path, key: str, resume: bool = True):
        self.path, self.key = Path(path), key
        self.header = json.dumps({"journal": JOURNAL_VERSION, "key": key}).encode() + b"\n"
        self.offsets: dict[str, int] = {}   # file -> byte offset of its record
        self.restarted = False              # an existing journal was set aside
        if resume and self._ours():
            self._index()
        else:
            self.restarted = self.path.exists()
            atomic_write(self.path, self.header)
        # Open for the journal's lifetime (one file, appended and read per recording); close() closes them.
        self._append = open(self.path, "ab")  # noqa: SIM115
        self._read = open(self.path, "rb")  # noqa: SIM115
        self._synced = time.monotonic()

    def _ours(self) -> bool:
        """Whether a journal of this run's key is on disk."""
        if not self.path.is_file():
            return False
        with open(self.path, "rb") as f:
            return f.readline() == self.header

    def _index(self) -> None:
        """Find every record's offset, reading one line at a time (a season's journal can hold gigabytes).

        A last line without its newline was being written when the process died:
        it is cut off, so the next record does not glue itself to it.
        """
        with open(self.path, "r+b") as f:
            offset = len(f.readline())
            for line in f:
                if not line.endswith(b"\n"):
                    f.truncate(offset)
                    break
                self.offsets[json.loads(line)["file"]] = offset
                offset += len(line)

    def __contains__(self, rel: str) -> bool:
        return rel in self.offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, record: dict) -> None:
        """Commit one record.

        When this returns the line is in the operating system's hands, so a
        killed process loses nothing; it is forced to the disk at least every
        ``FSYNC_SECONDS`` (an fsync per line cost up to 4 ms, a tenth of a short
        clip's work), so a power cut loses at most that much.
        """
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        offset = self._append.seek(0, os.SEEK_END)
        self._append.write(line)
        self._append.flush()
        if time.monotonic() - self._synced >= FSYNC_SECONDS:
            self.sync()
        self.offsets[record["file"]] = offset

    def sync(self) -> None:
        os.fsync(self._append.fileno())
        self._synced = time.monotonic()

    def read(self, rel: str) -> dict:
        self._read.seek(self.offsets[rel])
        return json.loads(self._read.readline())

    def close(self) -> None:
        self.sync()
        self._append.close()
        self._read.close()


# ---------------------------------------------------------------- workers

def default_workers(clf: WindowClassifier) -> int:
    """Every core this process may use; one where Keras runs, as it already spreads one model over every core."""
    return 1 if any(m.backend == "keras" for m in clf.members) else len(os.sched_getaffinity(0))


_worker: dict = {}   # the classifier and settings of this worker process


def _start_worker(settings: Settings) -> None:
    _worker["clf"], _worker["settings"] = settings.classifier(), settings


def _classify_in_worker(path: str, rel: str) -> dict:
    return file_record(_worker["clf"], path, rel, _worker["settings"])


def classify_local(clf: Classifier, root, rels: Iterable[str], settings: Settings,
                   workers: int = 1) -> Iterator[dict]:
    """Yield a record per recording, in the order they finish.

    ``workers=1`` classifies in this process with ``clf``. More start that many
    worker processes (spawned: a forked ONNX Runtime or TensorFlow is not safe),
    each loading the model once; at most ``IN_FLIGHT_PER_WORKER`` files per
    worker are queued at a time, so memory does not grow with the folder.

    Raises
    ------
    RunInterrupted
        A worker process died (killed, out of memory, a crash in a decoder).
    """
    root, pending = Path(root), iter(rels)
    if workers == 1:
        yield from (file_record(clf, root / rel, rel, settings) for rel in pending)
        return
    # Children inherit the environment: one BLAS thread each, or the workers fight over the cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(settings,))
    in_flight = {}
    try:
        while True:
            for rel in pending:
                in_flight[pool.submit(_classify_in_worker, str(root / rel), rel)] = rel
                if len(in_flight) >= workers * IN_FLIGHT_PER_WORKER:
                    break
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                del in_flight[future]
    except BrokenProcessPool:
        raise RunInterrupted(f"a worker process died while reading one of: "
                             f"{', '.join(sorted(in_flight.values()))}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def commit(records: Iterable[dict], journal: Journal, root, total: int) -> None:
    """Append each record to the journal as it arrives, print its warnings, and show progress.

    The progress bar counts files and the hours of audio classified per second.
    """
    started, seconds = time.monotonic(), 0.0
    with tqdm(total=total, desc="classifying", unit="file", disable=None) as bar:
        for record in records:
            for line in record.pop("warnings"):
                tqdm.write(line, file=sys.stderr)
            if "error" in record:
                tqdm.write(f"warning: skipping {Path(root) / record['file']}: {record['error']}", file=sys.stderr)
            journal.append(record)
            seconds += audio_seconds(record)
            rate = seconds / 3600 / max(time.monotonic() - started, 1e-6)
            bar.set_postfix_str(f"{rate:.2f} h audio/s", refresh=False)
            bar.update()
