"""Multi-label scores, decisions and data: macro mAP and ROC AUC, per-class thresholds, the classes a clip is
given, and two-clip mixtures that teach overlapping animals from single-label folders.

Conventions: ``targets`` are (n, C) 0/1 arrays (1: the class is present in
the clip; a clip may hold several, or none), ``scores`` and ``probs`` (n, C)
per-class scores where higher means more likely present (sigmoid
probabilities, or softmax ones for a single-label model). Macro averages
skip the classes where a metric is undefined on the clips given (no
positive for AP, not both positives and negatives for AUC), and raise
ValueError when no class is left.

scikit-learn is imported inside the functions, so that deciding labels at
prediction time does not pay its import.
"""
from __future__ import annotations

import numpy as np

from .audio import active_power
from .features import clip_features, n_real_frames

DEFAULT_THRESHOLD = 0.5   # for a class without a single positive validation clip


def _per_class(targets, scores, metric, defined) -> float:
    """Mean of ``metric(targets[:, c], scores[:, c])`` over the classes ``c`` where ``defined(column)``."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(f"targets and scores must both be (n, C), got {targets.shape} and {scores.shape}")
    values = [metric(targets[:, c], scores[:, c]) for c in range(targets.shape[1]) if defined(targets[:, c])]
    if not values:
        raise ValueError("no class has the positives (and negatives) the metric needs")
    return float(np.mean(values))


def mean_average_precision(targets, scores) -> float:
    """Macro mAP: the mean over classes with a positive of their average precision.

    A class's AP is ``sum_k (R_k - R_{k-1}) P_k`` over the score thresholds
    (scikit-learn's ``average_precision_score``, no interpolation).
    """
    from sklearn.metrics import average_precision_score
    return _per_class(targets, scores, average_precision_score, lambda column: column.any())


def mean_roc_auc(targets, scores) -> float:
    """Macro ROC AUC: the mean over classes with positives and negatives of their area under the ROC curve."""
    from sklearn.metrics import roc_auc_score
    return _per_class(targets, scores, roc_auc_score, lambda column: 0 < column.sum() < len(column))


def best_f1_thresholds(targets, probs, default: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(C,) per-class thresholds: for each class, the probability cut that maximises its F1 on these clips.

    A clip is given the class when its probability is at least the
    threshold. Among cuts of equal F1 the highest wins (fewer false
    alarms). A class with no positive gets ``default``.
    """
    from sklearn.metrics import precision_recall_curve
    targets, probs = np.asarray(targets), np.asarray(probs, dtype=np.float64)
    thresholds = np.full(targets.shape[1], default)
    for c in np.flatnonzero(targets.any(axis=0)):
        precision, recall, cuts = precision_recall_curve(targets[:, c], probs[:, c])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds[c] = cuts[len(f1) - 1 - np.argmax(f1[::-1])]   # cuts rise: the last maximum is the highest
    return thresholds


def listed_classes(probs, thresholds) -> list[int]:
    """Indices of the classes whose probability is at least their threshold, most probable first."""
    probs = np.asarray(probs, dtype=np.float64)
    above = np.flatnonzero(probs >= np.asarray(thresholds))
    return [int(i) for i in above[np.argsort(-probs[above], kind="stable")]]


def label_sets_micro_f1(targets, predicted) -> float:
    """Micro F1 of predicted 0/1 label sets (n, C) against ``targets``: 2 TP / (2 TP + FP + FN) over every entry."""
    targets, predicted = np.asarray(targets, bool), np.asarray(predicted, bool)
    tp = np.sum(targets & predicted)
    wrong = np.sum(targets != predicted)
    return float(2 * tp / max(2 * tp + wrong, 1))


# ---------------------------------------------------------------- mixtures

def draw_pair(labels: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Two indices into ``labels`` of clips of different classes: the first uniform, the second among the rest."""
    first = int(rng.integers(len(labels)))
    return first, int(rng.choice(np.flatnonzero(labels != labels[first])))


def mix_pair(a: np.ndarray, b: np.ndarray, level_db: float) -> np.ndarray:
    """``a`` plus ``b`` scaled to ``level_db`` dB below ``a`` (active power), both from their first sample.

    The mixture lasts as long as the longer clip; if it would clip, it is
    scaled down as a whole (the level difference stays).
    """
    gain = np.sqrt(active_power(a) / (max(active_power(b), 1e-12) * 10 ** (level_db / 10)))
    mixed = np.zeros(max(len(a), len(b)), np.float64)
    mixed[:len(a)] += a
    mixed[:len(b)] += gain * np.asarray(b, np.float64)
    peak = np.max(np.abs(mixed))
    return (mixed / max(peak, 1.0)).astype(np.float32)


def one_mixture(audio: list, labels: np.ndarray, extents: np.ndarray, n_classes: int, max_level_db: float,
                cfg, rng: np.random.Generator) -> tuple[np.ndarray, list, list]:
    """A random two-clip mixture: (features, the two clips' extents in frames, their one-hot target rows).

    ``audio``, ``labels`` and ``extents`` describe the clips to draw from
    (animals only); the level difference is uniform in +-``max_level_db``.
    """
    i, j = draw_pair(labels, rng)
    mixed = mix_pair(np.asarray(audio[i], np.float32), np.asarray(audio[j], np.float32),
                     rng.uniform(-max_level_db, max_level_db))
    rows = np.eye(n_classes, dtype=np.float32)[[labels[i], labels[j]]]
    return clip_features(mixed, cfg), [extents[i], extents[j]], list(rows)


def mixture_set(audio: list, labels: np.ndarray, x: np.ndarray, count: int, n_classes: int, max_level_db: float,
                cfg, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mixtures of the given clips (features ``x``): their features and whole-window targets (two-hot)."""
    extents = np.array([n_real_frames(clip) for clip in x])
    mixtures = [one_mixture(audio, labels, extents, n_classes, max_level_db, cfg, rng) for _ in range(count)]
    return np.stack([m[0] for m in mixtures]), np.array([np.max(m[2], axis=0) for m in mixtures])
