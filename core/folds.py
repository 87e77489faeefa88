"""K-fold cross-validation of a training recipe (``--folds K`` on every training script).

The protocol of the seeds' 10-fold figures, made group-aware: every labelled
clip (Training and Test together) is dealt into K folds by scikit-learn's
``StratifiedGroupKFold`` (seeded by ``--seed``), so that each fold holds
about the same share of every class and a group of copies of one recording
never straddles two folds. Each fold is tested once by a model trained on
the other K-1: validation (early stopping, calibration, rejection thresholds)
is carved from those K-1 as in a normal run, and the fold is read only for
its report. The model directory gets:

- ``folds/fold<k>/``: each fold's ``metrics.json``, ``classification_report.csv``,
  ``confusion_matrix.csv`` and ``history.csv``; ``folds/assignment.csv``
  (file, class, group, fold of every clip);
- ``cv_metrics.json``: mean and std (population, as ``bench/compare.py``
  reports seeds) over folds of every numeric metric, and each fold's;
- ``cv_report.csv``: the per-class report's mean and std over folds;
- at the top, the complete model directory of the fold with the best
  validation macro-F1 (chosen on validation, never on a test fold), so
  ``predict.py`` and every other command use it as usual.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import Clips, DatasetError, DataSplits, load_labelled, read_manifest, split_validation
from .front_ends import LogMel
from .negatives import concat
from .training import (collect_outliers, ensure_dataset, finish_splits, keeps_audio, publish_result, staged_dir,
                       train_and_report)

FOLD_FILES = ("metrics.json", "classification_report.csv", "confusion_matrix.csv", "history.csv")
CHOSEN_BY = "val_macro_f1"   # the validation score that picks the fold whose model the directory keeps
HEADLINE = ("accuracy", "macro_f1", "weighted_f1")


def recording_groups(files: list[str], content_hashes: list[str], manifest: list[dict]) -> list[str]:
    """One group key per clip: clips that must stay on one side of every split share a key.

    ``files`` are paths relative to the data directory, as the manifest
    writes them. Manifest rows that share a decoded-audio ``hash`` (one clip
    in two containers) or a ``source`` recording (clips cut from one
    annotated recording) are one group, transitively. A clip the manifest
    does not list is grouped by its file's ``content_hashes`` entry.
    """
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    rows = {r["file"]: r for r in manifest}
    for f in files:
        if f in rows and rows[f].get("source"):
            parent[root("source:" + rows[f]["source"])] = root("audio:" + rows[f]["hash"])
    return [root("audio:" + rows[f]["hash"]) if f in rows else "content:" + h for f, h in zip(files, content_hashes)]


def check_fold_count(k: int, labels: np.ndarray, groups: list[str], classes: list[str]) -> None:
    """Raise :class:`DatasetError` (one line) unless 2 <= ``k`` <= the rarest class's number of groups.

    A class needs a group in every fold to be tested in each, and one left
    for training in each.
    """
    if k < 2:
        raise DatasetError(f"--folds {k}: cross-validation needs at least 2 folds "
                           f"(--folds 1 is the usual Training/Test split)")
    counts = {c: len({g for g, y in zip(groups, labels) if y == i}) for i, c in enumerate(classes)}
    rarest = min(counts, key=counts.get)
    if counts[rarest] < k:
        raise DatasetError(f"--folds {k}: class '{rarest}' has only {counts[rarest]} distinct recordings "
                           f"(copies count once); use --folds {counts[rarest]} or fewer")


def assign_folds(labels: np.ndarray, groups: list[str], k: int, seed: int) -> np.ndarray:
    """The fold (0 .. k-1) that tests each clip: stratified by label, whole groups, deterministic for ``seed``."""
    from sklearn.model_selection import StratifiedGroupKFold
    folds = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, tested) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[tested] = fold
    return folds


def fold_splits(labelled: Clips, groups: list[str], folds: np.ndarray, fold: int, classes: list[str],
                skipped: int, seed: int, val_size: float) -> DataSplits:
    """The splits of ``fold``: it is the test part; validation is carved from the rest by whole groups."""
    trained = np.flatnonzero(folds != fold)
    return split_validation(labelled.subset(trained), labelled.subset(np.flatnonzero(folds == fold)), classes,
                            skipped, seed, val_size, [groups[i] for i in trained])


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of a ``metrics.json`` dict; a nested dict's as ``outer.inner`` (strings, None dropped)."""
    flat = {}
    for key, value in metrics.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for inner, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                flat[key if inner is None else f"{key}.{inner}"] = float(v)
    return flat


def summarise_folds(fold_metrics: list[dict]) -> dict:
    """{"mean": {...}, "std": {...}} over folds of every numeric metric (population std; a metric some
    folds lack is summarised over those that have it)."""
    flat = [numeric_metrics(m) for m in fold_metrics]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    values = {k: [f[k] for f in flat if k in f] for k in keys}
    return {"mean": {k: float(np.mean(v)) for k, v in values.items()},
            "std": {k: float(np.std(v)) for k, v in values.items()}}


def average_reports(reports: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-class reports (rows: classes and averages) as one: ``<column>_mean`` and ``<column>_std`` over folds."""
    by_row = pd.concat(reports, keys=range(len(reports))).groupby(level=1, sort=False)
    mean, std = by_row.mean(), by_row.std(ddof=0)
    return pd.concat([pd.concat([mean[c].rename(f"{c}_mean"), std[c].rename(f"{c}_std")], axis=1)
                      for c in reports[0].columns], axis=1)


def write_assignment(path: Path, files: list[str], labels: np.ndarray, classes: list[str], groups: list[str],
                     folds: np.ndarray) -> None:
    """Write which fold tests each clip (1-based), with its class and group, as CSV."""
    pd.DataFrame({"file": files, "class": [classes[y] for y in labels], "group": groups,
                  "fold": folds + 1}).to_csv(path, index=False)


def move_contents(src: Path, dest: Path) -> None:
    """Move every entry of directory ``src`` into ``dest`` (same file system), then remove ``src``."""
    for entry in src.iterdir():
        entry.rename(dest / entry.name)
    src.rmdir()


def train_fold(variant: str, args, train_fn, data: DataSplits, front_end, extra_report, refit, staging: Path,
               fold: int) -> tuple[dict, pd.DataFrame, Path]:
    """Train and report one fold into a hidden whole model directory in ``staging``; copy its reports to folds/.

    Returns (its metrics, its per-class report, that model directory).
    """
    candidate = staging / f".fold{fold + 1}-model"
    candidate.mkdir()
    metrics, _ = train_and_report(variant, args, train_fn, data, front_end, candidate, extra_report, refit)
    kept = staging / "folds" / f"fold{fold + 1}"
    kept.mkdir()
    for name in FOLD_FILES:
        shutil.copy2(candidate / name, kept / name)
    return metrics, pd.read_csv(candidate / "classification_report.csv", index_col=0), candidate


def run_folds(variant: str, args, train_fn, with_audio: bool = False, front_end=None, extra_report=None,
              refit=None) -> dict:
    """Cross-validate a recipe over ``args.folds`` folds and publish the model directory (see the module doc).

    Arguments as :func:`core.training.run_experiment`. Returns the contents of
    ``cv_metrics.json``. Everything is staged beside ``args.model_dir`` and
    swapped in only when every fold has finished.
    """
    k = args.folds
    front_end = front_end or LogMel()
    try:
        ensure_dataset(args.data_dir)
        training, test, classes, skipped = load_labelled(args.data_dir, front_end.cfg,
                                                         keeps_audio(args, with_audio, front_end), args.cache_dir)
        labelled = concat(training, test)
        files = [Path(f).relative_to(args.data_dir).as_posix() for f in labelled.files]
        groups = recording_groups(files, labelled.hashes, read_manifest(args.data_dir))
        check_fold_count(k, labelled.y, groups, classes)
    except DatasetError as e:
        sys.exit(f"error: {e}")
    import keras
    folds = assign_folds(labelled.y, groups, k, args.seed)
    negatives = collect_outliers(args, front_end)
    print(f"{k}-fold cross-validation: {len(labelled.y)} labelled clips (Training and Test), "
          f"{len(set(groups))} recordings, {len(classes)} classes")
    fold_metrics, reports, chosen, chosen_dir = [], [], 0, None
    with staged_dir(args.model_dir) as staging:
        (staging / "folds").mkdir()
        write_assignment(staging / "folds" / "assignment.csv", files, labelled.y, classes, groups, folds)
        for fold in range(k):
            print(f"\nfold {fold + 1}/{k}", flush=True)
            keras.utils.set_random_seed(args.seed)
            data = finish_splits(fold_splits(labelled, groups, folds, fold, classes, skipped, args.seed,
                                             args.val_size), args, front_end, negatives)
            metrics, report, model_dir = train_fold(variant, args, train_fn, data, front_end, extra_report, refit,
                                                    staging, fold)
            fold_metrics.append(metrics)
            reports.append(report)
            if chosen_dir is None or metrics[CHOSEN_BY] > fold_metrics[chosen][CHOSEN_BY]:   # ties: the earlier
                if chosen_dir is not None:
                    shutil.rmtree(chosen_dir)
                chosen, chosen_dir = fold, model_dir
            else:
                shutil.rmtree(model_dir)
            print(f"fold {fold + 1}/{k}: " + ", ".join(f"{m} {metrics[m]:.3f}" for m in HEADLINE)
                  + f" on {metrics['n_test']} clips; validation macro-F1 {metrics['val_macro_f1']:.3f}", flush=True)
        move_contents(chosen_dir, staging)
        summary = {"variant": variant, "folds": k, "seed": args.seed, "model_fold": chosen + 1,
                   "model_chosen_by": CHOSEN_BY, **summarise_folds(fold_metrics),
                   "per_fold": [{"fold": i + 1, **m} for i, m in enumerate(fold_metrics)]}
        (staging / "cv_metrics.json").write_text(json.dumps(summary, indent=2))
        average_reports(reports).to_csv(staging / "cv_report.csv", index_label="class")
    mean, std = summary["mean"], summary["std"]
    publish_result(variant, args, {**mean, "n_test": len(labelled.y), "train_seconds": sum(
        m["train_seconds"] for m in fold_metrics)}, fold_metrics[chosen]["epochs_run"])
    print(f"\n{variant}, {k}-fold cross-validation over {len(labelled.y)} clips: "
          + ", ".join(f"{m} {mean[m]:.3f} ± {std[m]:.3f}" for m in HEADLINE)
          + f"; model: fold {chosen + 1} (best validation macro-F1); artifacts in {args.model_dir}")
    print(json.dumps({"folds": k, **{f"{m}_{s}": summary[s][m] for m in HEADLINE for s in ("mean", "std")}}))
    return summary
