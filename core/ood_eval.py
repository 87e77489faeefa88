"""Measuring open-set rejection: every score on known clips against sets of unknown sounds.

Used by ``ood.py`` (one model, the user's folders of other sounds) and by
``bench/open_set.py`` (leave-classes-out, wind and synthetic noise). Known
clips are the model's Test split; every OOD file contributes each of its
analysis windows, as ``predict.py`` would see them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import openset
from .audio import AudioError, is_audio_file, warn
from .dataset import list_class_files, load_clips
from .features import FeatureCache
from .rejection import DEPLOYABLE_SCORES
from .reports import save_figure
from .windows import iter_windows

MC_SCORES = ("mc_msp", "mc_variance")


def test_split(clf, data_dir: Path, cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the Test clips of ``data_dir`` in the model's classes."""
    files, labels = list_class_files(Path(data_dir) / "Test")
    pairs = [(f, c) for f, c in zip(files, labels) if c in clf.classes]
    if not pairs:
        raise AudioError(Path(data_dir) / "Test", "no Test clips of the model's classes")
    clips, _ = load_clips([f for f, _ in pairs], [c for _, c in pairs], clf.classes, clf.cfg,
                          FeatureCache(cache_dir) if cache_dir else None, desc="test features")
    return clf.front_end.featurize(clips, cache_dir).x, clips.y


def folder_windows(folder: Path, clf, max_windows_per_file: int = 64) -> np.ndarray:
    """Front-end features (n, ...) of the analysis windows of every recording under ``folder``.

    Unreadable recordings are skipped with a warning; a folder with no usable
    audio raises :class:`AudioError` naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(folder, "no such folder")
    windows, skipped = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_audio_file(p)):
        try:
            for i, (_, _, audio) in enumerate(iter_windows(path, clf.cfg)):
                if i == max_windows_per_file:
                    break
                windows.append(clf.front_end.features(audio))
        except AudioError as e:
            warn(f"skipping {e}")
            skipped += 1
    if not windows:
        raise AudioError(folder, "no readable recordings" + (f" ({skipped} unreadable)" if skipped else ""))
    return np.stack(windows)


def all_scores(clf, x: np.ndarray, batch: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Calibrated probabilities and every deployable OOD score of a feature batch."""
    probs, scores = [], []
    for i in range(0, len(x), batch):
        logits, embedding = clf.predictor.run(x[i:i + batch])
        probs.append(clf.open_set.probabilities(logits))
        scores.append(clf.open_set.all_scores(logits, embedding))
    return np.concatenate(probs), {name: np.concatenate([s[name] for s in scores]) for name in DEPLOYABLE_SCORES}


def mc_dropout_scores(model, x: np.ndarray, samples: int, seed: int) -> dict[str, np.ndarray]:
    """The two MC-dropout scores of ``x`` (Keras only: ``samples`` stochastic passes)."""
    from .model_views import mc_dropout_probabilities
    mean_score, variance = openset.mc_dropout_scores(mc_dropout_probabilities(model, x, samples, seed))
    return {"mc_msp": mean_score, "mc_variance": variance}


def score_sets(clf, known_x: np.ndarray, ood_sets: dict[str, np.ndarray], mc_samples: int = 0,
               seed: int = 0) -> tuple[np.ndarray, dict, dict]:
    """Probabilities of the known clips and, per score, the scores of the known clips and of each OOD set."""
    known_probs, known = all_scores(clf, known_x)
    unknown = {name: all_scores(clf, x)[1] for name, x in ood_sets.items()}
    if mc_samples:
        known.update(mc_dropout_scores(clf.predictor.model, known_x, mc_samples, seed))
        for name, x in ood_sets.items():
            unknown[name].update(mc_dropout_scores(clf.predictor.model, x, mc_samples, seed))
    return known_probs, known, unknown


def report(clf, known_probs, known_y, known: dict, unknown: dict, keep: float) -> pd.DataFrame:
    """One row per (score, OOD set): AUROC, FPR at 95 % TPR, AUPR, and what rejection costs on Test.

    Deployable scores use the model's thresholds (fitted on validation);
    MC-dropout scores, which the model does not store, use the threshold that
    keeps ``keep`` of the Test clips, so their rejection figures are optimistic.
    """
    rows = []
    pred = known_probs.argmax(1)
    for score, in_scores in known.items():
        threshold = clf.open_set.thresholds.get(score, openset.rejection_threshold(in_scores, keep))
        accuracy, rejected = openset.accuracy_after_rejection(pred, known_y, in_scores, threshold)
        for ood_name, scores in unknown.items():
            out = scores[score]
            rows.append({"score": score, "ood_set": ood_name, "n_known": len(in_scores), "n_ood": len(out),
                         "auroc": openset.auroc(in_scores, out), "fpr95": openset.fpr_at_tpr(in_scores, out),
                         "aupr": openset.aupr(in_scores, out), "threshold": threshold,
                         "ood_rejected": float(np.mean(out > threshold)),
                         "test_accuracy": float(np.mean(pred == known_y)),
                         "test_accuracy_after_rejection": accuracy, "test_rejected": rejected,
                         "model_score": score == clf.open_set.score})
    return pd.DataFrame(rows)


def plot_roc(known: dict, unknown: dict, path: Path) -> None:
    """ROC curves of every score, one panel per OOD set."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve
    fig = Figure(figsize=(4.2 * len(unknown), 4.2))
    FigureCanvasAgg(fig)
    for ax, (ood_name, scores) in zip(np.atleast_1d(fig.subplots(1, len(unknown))), unknown.items()):
        for score, in_scores in known.items():
            is_out = np.r_[np.zeros(len(in_scores)), np.ones(len(scores[score]))]
            fpr, tpr, _ = roc_curve(is_out, np.r_[in_scores, scores[score]])
            ax.plot(fpr, tpr, label=f"{score} ({openset.auroc(in_scores, scores[score]):.3f})")
        ax.plot([0, 1], [0, 1], "k:", linewidth=1)
        ax.set(title=f"known Test vs {ood_name}", xlabel="false alarms (unknown accepted)",
               ylabel="unknown rejected")
        ax.legend(fontsize="x-small", loc="lower right", title="score (AUROC)", title_fontsize="x-small")
    fig.tight_layout()
    save_figure(fig, path)


def plot_centroid_distances(known: dict, unknown: dict, threshold: float, path: Path) -> None:
    """The seed's histogram: cosine distance to the nearest class centroid, known vs each OOD set."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bins = np.linspace(0, max(np.max(known["cosine"]), *(np.max(s["cosine"]) for s in unknown.values())), 40)
    ax.hist(known["cosine"], bins, alpha=0.6, density=True, label="known classes (Test)")
    for name, scores in unknown.items():
        ax.hist(scores["cosine"], bins, alpha=0.45, density=True, label=name)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="cosine threshold (keeps 95 % of validation)")
    ax.set(xlabel="cosine distance to the nearest class centroid", ylabel="density",
           title="distance to class centroids in the embedding")
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
