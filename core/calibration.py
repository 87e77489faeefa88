"""Temperature scaling and calibration metrics for a classifier's probabilities.

A classifier is *calibrated* when, among the clips it labels with confidence
``p``, a share ``p`` is right. Deep networks tend to be over-confident; one
scalar temperature ``T`` fitted on held-out data (Guo et al., "On Calibration
of Modern Neural Networks", ICML 2017) usually fixes most of it without
changing a single prediction, since dividing every logit of a row by the same
``T > 0`` keeps their order.

Logits or probabilities
-----------------------
The models of this toolkit end in a softmax and return probabilities, not
logits. That is enough: softmax is invariant to adding a constant to a row, and
``log(softmax(z)) = z - logsumexp(z)`` differs from ``z`` by exactly such a
constant, so ``np.log(probs)`` can stand in for the logits everywhere in this
module (:func:`logits_from_probs` does it, with a floor against ``log(0)``).

Sigmoid heads
-------------
A multi-label model (train_vgg.py --multi-label) scores each class with its
own sigmoid. The same idea applies: one ``T`` divides every logit
(:func:`fit_binary_temperature`, fitted on the binary NLL), and
:func:`activate` turns logits into either kind of probabilities.

Conventions
-----------
``probs`` and ``logits`` are ``(n, C)`` float arrays, one row per clip;
``labels`` are ``(n,)`` integer class indices in ``[0, C)``. Every function is
pure numpy/scipy and returns new arrays.
"""
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from .reports import save_figure

PROB_FLOOR = 1e-12   # the smallest probability a log is taken of: -log(1e-12) ~ 27.6 nats


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of ``logits / temperature``, computed stably.

    Parameters
    ----------
    logits : array_like, shape (..., C)
        Unnormalised scores; any leading batch shape, e.g. ``(n, C)``.
    temperature : float > 0
        ``T > 1`` flattens the distribution, ``T < 1`` sharpens it.

    Returns
    -------
    probs : ndarray, same shape as ``logits``
        Non-negative, each row summing to 1. Rows may contain ``-inf`` logits
        (probability exactly 0) but not only ``-inf``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    # subtracting the row maximum changes nothing mathematically and keeps exp() from overflowing
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def logits_from_probs(probs, floor: float = PROB_FLOOR) -> np.ndarray:
    """Log-probabilities usable as logits: ``log(max(probs, floor))``.

    ``softmax(logits_from_probs(p)) == p`` for every row whose entries are all
    at least ``floor`` (shift invariance; see the module docstring). The floor
    only keeps ``log(0) = -inf`` out of the arithmetic.
    """
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), floor))


def apply_temperature(probs, temperature: float, floor: float = PROB_FLOOR) -> np.ndarray:
    """Calibrated probabilities from a softmax model's output: ``softmax(log(probs) / T)``."""
    return softmax(logits_from_probs(probs, floor), temperature)


def _check_labels(labels, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, got shape {labels.shape} dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    return labels


def negative_log_likelihood(probs, labels, floor: float = PROB_FLOOR) -> float:
    """Mean negative log-likelihood (cross-entropy, nats) of the true classes.

    ``-mean(log(max(probs[i, labels[i]], floor)))``. The floor bounds the cost
    of one confidently wrong clip at ``-log(floor)`` (27.6 nats for 1e-12), so
    a single zero probability cannot make the mean infinite.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = _check_labels(labels, len(probs), probs.shape[-1])
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(probs)), labels], floor))))


def _nll_of_logits(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of softmax(logits / T), as logsumexp(z) - z[label] (no exp, no log of a small number)."""
    z = logits / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(z)), labels]))


def fit_temperature(logits, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` minimising the mean NLL of ``softmax(logits / T)``.

    Parameters
    ----------
    logits : array_like, shape (n, C)
        Held-out logits. For a model that outputs probabilities pass
        ``np.log(probs)`` (or :func:`logits_from_probs`): it gives the same ``T``
        since softmax is shift-invariant per row. Entries must be finite.
    labels : array_like of int, shape (n,)
        True classes of the same clips.
    bounds : (float, float)
        Search interval for ``T``. The NLL is minimised over ``log T`` (bounded
        Brent search, :func:`scipy.optimize.minimize_scalar`), which treats
        halving and doubling ``T`` alike.

    Returns
    -------
    temperature : float
        ``T > 1`` means the model was over-confident. A result at a bound means
        the optimum lies at or beyond it (e.g. a perfectly separable validation
        set drives ``T`` toward 0).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or not np.all(np.isfinite(logits)):
        raise ValueError("logits must be a finite (n, C) array; use logits_from_probs for probabilities")
    labels = _check_labels(labels, len(logits), logits.shape[1])
    return _minimise_over_temperature(lambda t: _nll_of_logits(logits, labels, t), bounds)


def _minimise_over_temperature(nll, bounds: tuple[float, float]) -> float:
    """The ``T`` within ``bounds`` minimising ``nll(T)``, searched over ``log T`` (bounded Brent search)."""
    from scipy.optimize import minimize_scalar   # here: importing scipy.optimize slows every command's start
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    result = minimize_scalar(lambda log_t: nll(np.exp(log_t)), bounds=(np.log(lo), np.log(hi)), method="bounded",
                             options={"xatol": 1e-6})
    return float(np.exp(result.x))


def sigmoid(logits, temperature: float = 1.0) -> np.ndarray:
    """The logistic function of each entry of ``logits / temperature``, computed stably (a multi-label head)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    return np.exp(-np.logaddexp(0.0, -z))   # 1 / (1 + e^-z) without overflow for large |z|


ACTIVATIONS = {"softmax": softmax, "sigmoid": sigmoid}


def activate(logits, activation: str, temperature: float = 1.0) -> np.ndarray:
    """A head's probabilities from its logits: ``softmax`` over each row, or ``sigmoid`` of each entry."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown output activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[activation](logits, temperature)


def binary_negative_log_likelihood(probs, targets, floor: float = PROB_FLOOR) -> float:
    """Mean binary cross-entropy (nats) of independent per-class probabilities against 0/1 ``targets``.

    ``-mean(t log p + (1 - t) log(1 - p))`` over every clip and class, each
    log floored as in :func:`negative_log_likelihood`; the NLL of a sigmoid
    (multi-label) head.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    return float(-np.mean(t * np.log(np.maximum(p, floor)) + (1 - t) * np.log(np.maximum(1 - p, floor))))


def fit_binary_temperature(logits, targets, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The one ``T`` minimising the mean binary NLL of ``sigmoid(logits / T)`` against 0/1 ``targets`` (n, C).

    Temperature scaling for a sigmoid head: every logit is divided by the
    same ``T`` and passed through its own sigmoid, so each class's ranking
    (hence its average precision and ROC AUC) is unchanged. The binary NLL
    of logit ``z`` and target ``t`` is ``log(1 + e^z) - t z``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if logits.shape != targets.shape or not np.all(np.isfinite(logits)):
        raise ValueError(f"logits must be finite and shaped like targets, got {logits.shape} and {targets.shape}")
    return _minimise_over_temperature(
        lambda t: float(np.mean(np.logaddexp(0.0, logits / t) - targets * logits / t)), bounds)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """The reliability bin of each confidence (see :func:`reliability_bins` for the edges)."""
    return np.clip(np.ceil(confidence * n_bins - 1e-9).astype(int) - 1, 0, n_bins - 1)


def reliability_bins(probs, labels, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin confidence, accuracy and count for a reliability diagram.

    A clip's *confidence* is its largest probability; it is *correct* when that
    class (the first one, on ties) is its label. Bins split ``(0, 1]`` into
    ``n_bins`` equal widths, right-closed: bin ``b`` holds confidences in
    ``(b / n_bins, (b + 1) / n_bins]``, as in Guo et al.'s reference code, so a
    confidence of exactly 1 falls in the last bin. A confidence within 1e-9 of
    a bin width from an edge counts as on the edge, so that a confidence of
    0.28 lands in ``(0.24, 0.28]`` with 25 bins although ``0.28 * 25`` is
    ``7.000000000000001`` in floating point.

    Returns
    -------
    bins : dict of ndarray, each of shape (n_bins,) except ``edges`` (n_bins + 1,)
        ``edges``; ``confidence`` (mean confidence in the bin); ``accuracy``
        (share correct in the bin); ``count`` (int, clips in the bin). Empty
        bins have ``count`` 0 and NaN ``confidence`` and ``accuracy``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = _check_labels(labels, len(probs), probs.shape[-1])
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    index = _bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):   # empty bins: 0 / 0 -> NaN, on purpose
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "confidence": mean_confidence,
            "accuracy": accuracy, "count": count}


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017), in ``[0, 1]``.

    ``ECE = sum_b |accuracy_b - confidence_b| * count_b / n`` over the bins of
    :func:`reliability_bins` (empty bins contribute nothing). 0 is perfect
    calibration; the value depends on ``n_bins``, so compare ECEs only at equal
    ``n_bins``.
    """
    bins = reliability_bins(probs, labels, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(gaps * bins["count"][filled]) / max(1, int(bins["count"].sum())))


def ece_if_calibrated(probs, n_bins: int = 15, draws: int = 2000, seed: int = 0) -> float:
    """The ECE that a perfectly calibrated model with these confidences would measure on as many clips.

    On few clips ECE is biased upward: even if every clip's top class were
    right with exactly its confidence, each bin's accuracy would scatter
    around its mean confidence. Each of ``draws`` draws decides every clip's
    correctness by a coin of its confidence; the result is the mean ECE
    (:func:`expected_calibration_error`, ``n_bins``) over the draws. An ECE
    near this value is as good as these clips can show.
    """
    confidence = np.asarray(probs, dtype=np.float64).max(axis=1)
    in_bin = np.eye(n_bins)[_bin_index(confidence, n_bins)]                       # (n, n_bins)
    gaps = (np.random.default_rng(seed).random((draws, len(confidence))) < confidence) - confidence
    return float(np.abs(gaps @ in_bin).sum(axis=1).mean() / max(1, len(confidence)))


def plot_reliability(probs_before, probs_after, labels, path, n_bins: int = 15) -> Path:
    """Write a two-panel reliability diagram (uncalibrated | calibrated) as a PNG.

    Each panel shows per-bin accuracy as bars against the diagonal of perfect
    calibration, the gap to the bin's mean confidence shaded, and the ECE in the
    title. The image is rendered with the Agg backend (no display, no pyplot
    global state) into a temporary file beside ``path`` that then replaces
    ``path`` atomically, so a reader never sees half an image.

    Returns
    -------
    path : pathlib.Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(9, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    width = 1.0 / n_bins
    for ax, probs, name in zip(axes, (probs_before, probs_after), ("uncalibrated", "temperature-scaled")):
        bins = reliability_bins(probs, labels, n_bins)
        filled = bins["count"] > 0
        left = bins["edges"][:-1][filled]
        ax.bar(left, bins["accuracy"][filled], width=width, align="edge", color="tab:blue",
               edgecolor="black", linewidth=0.5, label="accuracy")
        # the shaded part is the calibration gap: below the bar's top = under-confident, above = over-confident
        ax.bar(left, bins["confidence"][filled] - bins["accuracy"][filled], bottom=bins["accuracy"][filled],
               width=width, align="edge", color="tab:red", alpha=0.3, edgecolor="tab:red", label="gap")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)",
               title=f"{name} (ECE {expected_calibration_error(probs, labels, n_bins):.3f})")
        ax.set_aspect("equal")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize="small")
    fig.tight_layout()

    save_figure(fig, path)
    return path
