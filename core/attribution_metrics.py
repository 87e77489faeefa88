"""Masks from saliency maps, and the metrics that score them ("explanations you can hear").

A saliency map over one model input (a ``(frames, n_mels)`` log-Mel window) becomes a
mask ``m`` in [0, 1] of the same shape, either binary (the top ``top_percent`` % of bins)
or soft (min-max normalised saliency). The metrics below follow the posthoc-interpretation
evaluation of Paissan et al., "Listenable Maps for Audio Classifiers" (L-MAC, ICML 2024)
and its SpeechBrain recipe (``recipes/ESC50/interpret``: ``quantus_eval.py``,
``interpreter_brain.py``), with the definitions taken from the papers they cite:

=======  ======================================================  ==========================
name     definition (per input i, class c, then averaged)        source
=======  ======================================================  ==========================
AI       100 * 1[p_c(x) < p_c(x ⊙ m)]                            Chattopadhay et al. 2018
AD       100 * max(0, p_c(x) - p_c(x ⊙ m)) / p_c(x)              Chattopadhay et al. 2018
AG       100 * max(0, p_c(x ⊙ m) - p_c(x)) / (1 - p_c(x))        Zhang et al. (Opti-CAM)
FF       p_c(x) - p_c(x ⊙ (1 - m))                               Paissan et al. 2024
Fid-In   1[argmax p(x ⊙ m) = c]                                  Paissan et al. 2024
SPS      Gini index of |a| (flattened)                           Chalasani et al. 2020
COMP     entropy of |a| / sum |a| (natural log)                  Bhatt et al. 2020
=======  ======================================================  ==========================

``p`` is the model's class-probability vector (``predict`` output) and ``c`` the class
explained, by default the model's prediction on ``x``. AI/AD/AG/Fid-In look at the
*masked-in* input (only what the explanation keeps), FF at the *masked-out* input (what
the explanation removes), as in L-MAC.

Masking in this toolkit's feature domain
    ``x ⊙ m`` in L-MAC is taken in a log1p-power domain where 0 is silence. Our inputs are
    z-normalised log-Mel maps (``features.normalize_frames``) in which 0 is the clip's mean
    level, the value the padding frames carry ("no information of its own"). So a removed
    bin is *replaced* by ``baseline`` (default 0.0) rather than scaled towards -inf dB:
    ``masked = m * x + (1 - m) * baseline``, which with ``baseline=0`` is exactly ``x ⊙ m``.

``predict`` is any callable ``(n, frames, n_mels) -> (n, C)`` class probabilities (e.g. a
wrapped Keras model); this module is numpy only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]

DEFAULT_TOP_PERCENT = 20.0
MASK_TYPES = ("binary", "soft")
_EPS = 1e-9  # as eps in the L-MAC recipe's AD / AG


# --------------------------------------------------------------------------- masks
def _check_finite(saliency: np.ndarray) -> np.ndarray:
    s = np.asarray(saliency, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("saliency has NaN or infinite values")
    return s


def _n_top(n: int, top_percent: float) -> int:
    """Number of bins in the top ``top_percent`` %: round half up of n * p / 100, within [0, n]."""
    if not 0.0 <= top_percent <= 100.0:
        raise ValueError(f"top_percent must be in [0, 100], got {top_percent}")
    return int(min(n, max(0, np.floor(n * top_percent / 100.0 + 0.5))))


def rank_bins(saliency: np.ndarray) -> np.ndarray:
    """Flat indices of ``saliency`` from most to least salient (signed values, largest first).

    Ties are broken deterministically by flat (row-major, i.e. frame-then-mel) index, lowest
    first (a stable sort).
    """
    s = _check_finite(saliency).ravel()
    return np.argsort(-s, kind="stable")


def binary_mask(saliency: np.ndarray, top_percent: float = DEFAULT_TOP_PERCENT) -> np.ndarray:
    """1.0 on the top ``top_percent`` % of bins by saliency, 0.0 elsewhere (float32, same shape).

    Exactly ``k = round_half_up(n * top_percent / 100)`` ones; ties broken as in ``rank_bins``.
    Signed saliency is ranked as is (negative evidence ranks last).
    """
    s = np.asarray(saliency)
    m = np.zeros(s.size, np.float32)
    m[rank_bins(s)[:_n_top(s.size, top_percent)]] = 1.0
    return m.reshape(s.shape)


def soft_mask(saliency: np.ndarray) -> np.ndarray:
    """Saliency min-max normalised to [0, 1] (float32, same shape).

    Negative values are clipped to 0 first (negative evidence is not kept by a mask), then
    ``(s - min) / (max - min)``. A constant map (e.g. all zeros) gives all zeros: no bin is
    singled out.
    """
    s = np.maximum(_check_finite(saliency), 0.0)
    if s.size == 0:
        return np.zeros(s.shape, np.float32)
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 0.0:
        return np.zeros(s.shape, np.float32)
    return ((s - lo) / (hi - lo)).astype(np.float32)


def random_mask(shape: Sequence[int], top_percent: float = DEFAULT_TOP_PERCENT,
                rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Random baseline for ``binary_mask``: the same number of ones, at uniformly random bins."""
    rng = np.random.default_rng(rng)
    n = int(np.prod(shape))
    m = np.zeros(n, np.float32)
    m[rng.permutation(n)[:_n_top(n, top_percent)]] = 1.0
    return m.reshape(tuple(shape))


def apply_mask(x: np.ndarray, mask: np.ndarray, baseline: float = 0.0) -> np.ndarray:
    """Keep ``x`` where ``mask`` is 1, ``baseline`` where it is 0: ``m * x + (1 - m) * baseline``.

    See the module docstring for why ``baseline=0`` means "removed" for these features.
    """
    x = np.asarray(x, np.float32)
    m = np.asarray(mask, np.float32)
    if m.shape != x.shape:
        raise ValueError(f"mask shape {m.shape} != input shape {x.shape}")
    return (m * x + (1.0 - m) * np.float32(baseline)).astype(np.float32)


# ------------------------------------------------------------ prediction helpers
def _as_batch(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return a[None] if a.ndim == 2 else a


def _probs(predict: Predict, batch: np.ndarray) -> np.ndarray:
    p = np.asarray(predict(batch), np.float64)
    if p.ndim != 2 or p.shape[0] != len(batch):
        raise ValueError(f"predict returned shape {p.shape} for a batch of {len(batch)}")
    return p


def _classes(p: np.ndarray, classes) -> np.ndarray:
    if classes is None:
        return p.argmax(axis=1)
    c = np.broadcast_to(np.asarray(classes, dtype=int), (len(p),))
    return np.array(c)


def _masked_probs(predict: Predict, x_batch, mask_batch, classes, baseline, inverse=False):
    """(p_c(x), p(masked), c): class-c probability on x, full probabilities on the masked input."""
    x = _as_batch(x_batch)
    m = _as_batch(mask_batch)
    p = _probs(predict, x)
    c = _classes(p, classes)
    keep = 1.0 - m if inverse else m
    o = _probs(predict, apply_mask(x, keep, baseline))
    rows = np.arange(len(x))
    return p[rows, c], o, c


# Metric formulas on class-c probabilities; pc = p_c(x), oc = p_c(masked input), per input.
def _ai(pc, oc):
    return 100.0 * (pc < oc).astype(np.float64)


def _ad(pc, oc):
    return 100.0 * np.maximum(0.0, pc - oc) / (pc + _EPS)


def _ag(pc, oc):
    return 100.0 * np.maximum(0.0, oc - pc) / (1.0 - pc + _EPS)


# ------------------------------------------------------------------- metrics
def average_increase(predict: Predict, x_batch, mask_batch, classes=None, baseline: float = 0.0) -> float:
    """AI, "Increase in Confidence" (Chattopadhay et al., Grad-CAM++, WACV 2018), in percent.

    AI = 100/N * sum_i 1[p_c(x_i) < p_c(x_i ⊙ m_i)]: share of inputs whose class-c
    probability rises when only the masked-in content is kept. Higher is better.
    """
    pc, o, c = _masked_probs(predict, x_batch, mask_batch, classes, baseline)
    return float(np.mean(_ai(pc, o[np.arange(len(o)), c])))


def average_drop(predict: Predict, x_batch, mask_batch, classes=None, baseline: float = 0.0) -> float:
    """AD, "Average Drop" (Chattopadhay et al., Grad-CAM++, WACV 2018), in percent.

    AD = 100/N * sum_i max(0, p_c(x_i) - p_c(x_i ⊙ m_i)) / p_c(x_i). Lower is better.
    (The L-MAC recipe's ``compute_AD`` softmaxes the probabilities a second time; we use
    the probabilities as the paper defines it.)
    """
    pc, o, c = _masked_probs(predict, x_batch, mask_batch, classes, baseline)
    return float(np.mean(_ad(pc, o[np.arange(len(o)), c])))


def average_gain(predict: Predict, x_batch, mask_batch, classes=None, baseline: float = 0.0) -> float:
    """AG, "Average Gain" (Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability",
    CVIU 2024), in percent.

    AG = 100/N * sum_i max(0, p_c(x_i ⊙ m_i) - p_c(x_i)) / (1 - p_c(x_i)). Higher is better.
    """
    pc, o, c = _masked_probs(predict, x_batch, mask_batch, classes, baseline)
    return float(np.mean(_ag(pc, o[np.arange(len(o)), c])))


def faithfulness(predict: Predict, x_batch, mask_batch, classes=None, baseline: float = 0.0) -> float:
    """FF, faithfulness on spectra (Paissan et al., L-MAC, ICML 2024), a probability difference.

    FF = 1/N * sum_i p_c(x_i) - p_c(x_i ⊙ (1 - m_i)): the drop of the class probability when
    the mask's content is REMOVED (replaced by ``baseline``). Higher is better; can be < 0.
    """
    pc, o, c = _masked_probs(predict, x_batch, mask_batch, classes, baseline, inverse=True)
    return float(np.mean(pc - o[np.arange(len(o)), c]))


def input_fidelity(predict: Predict, x_batch, mask_batch, classes=None, baseline: float = 0.0) -> float:
    """Fid-In, input fidelity (Paissan et al., L-MAC, ICML 2024), a share in [0, 1].

    Fid-In = 1/N * sum_i 1[argmax p(x_i ⊙ m_i) = c_i], with c_i the class explained (by
    default argmax p(x_i), i.e. the masked-in input keeps the model's decision). Ties in the
    argmax go to the lowest class index. Higher is better.
    """
    _, o, c = _masked_probs(predict, x_batch, mask_batch, classes, baseline)
    return float(np.mean(o.argmax(axis=1) == c))


def sparseness(saliency: np.ndarray) -> float:
    """SPS: Gini index of the flattened absolute saliency (Chalasani et al., "Concise
    explanations of neural networks using adversarial training", ICML 2020; as Quantus'
    ``Sparseness``, used by the L-MAC recipe).

    With a = sort(|s|) ascending, n = a.size: G = sum_k (2k - n - 1) a_k / (n * sum a),
    k = 1..n. 0 for a uniform map, (n - 1)/n for a single non-zero bin. Higher = sparser.
    An all-zero map gives 0.0 (Quantus adds 1e-7 to every bin instead; same limit).
    """
    a = np.sort(np.abs(_check_finite(saliency)).ravel())
    n, total = a.size, float(a.sum())
    if n == 0 or total <= 0.0:
        return 0.0
    k = np.arange(1, n + 1)
    return float(np.sum((2 * k - n - 1) * a) / (n * total))


def complexity(saliency: np.ndarray) -> float:
    """COMP: entropy (natural log) of the fractional contributions |s_k| / sum |s| (Bhatt et
    al., "Evaluating and aggregating feature-based model explanations", IJCAI 2020; as
    Quantus' ``Complexity``, used by the L-MAC recipe).

    log(n) for a uniform map, 0 for a single non-zero bin. Lower = simpler. An all-zero map
    gives 0.0 (nothing is attributed).
    """
    a = np.abs(_check_finite(saliency)).ravel()
    total = float(a.sum())
    if total <= 0.0:
        return 0.0
    q = a[a > 0] / total
    return float(-np.sum(q * np.log(q)))


# ------------------------------------------------------ deletion / insertion
def _curve(predict: Predict, x, saliency, c, steps, baseline, insert):
    x = np.asarray(x, np.float32)
    s = np.asarray(saliency)
    if s.shape != x.shape:
        raise ValueError(f"saliency shape {s.shape} != input shape {x.shape}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    order = rank_bins(s)
    n = x.size
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.floor(fractions * n + 0.5).astype(int)
    # rank_pos[j] = position of flat bin j in the ranking; bin j is "top-k" iff rank_pos[j] < k
    rank_pos = np.empty(n, int)
    rank_pos[order] = np.arange(n)
    top = rank_pos[None, :] < counts[:, None]                      # (steps+1, n)
    keep_x = top if insert else ~top
    flat = np.where(keep_x, x.ravel()[None, :], np.float32(baseline)).astype(np.float32)
    p = _probs(predict, flat.reshape((steps + 1,) + x.shape))
    if c is None:  # the model's prediction on x itself: first row (deletion) / last (insertion)
        c = int(p[-1 if insert else 0].argmax())
    return fractions, p[:, int(c)]


def deletion_curve(predict: Predict, x: np.ndarray, saliency: np.ndarray, c: int | None = None,
                   steps: int = 20, baseline: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Deletion curve (Petsiuk et al., RISE, BMVC 2018): p_c as the top-ranked bins are removed.

    At fraction f = 0, 1/steps, ..., 1 the round_half_up(f * n) most salient bins (``rank_bins``)
    of ``x`` are replaced by ``baseline``. Starts at p_c(x), ends at p_c(all baseline). All
    steps + 1 inputs go through ONE ``predict`` call. ``c=None``: argmax p(x).
    Returns (fractions, probs). Lower area is better.
    """
    return _curve(predict, x, saliency, c, steps, baseline, insert=False)


def insertion_curve(predict: Predict, x: np.ndarray, saliency: np.ndarray, c: int | None = None,
                    steps: int = 20, baseline: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Insertion curve (Petsiuk et al., RISE, BMVC 2018): p_c as the top-ranked bins are put back.

    Starts from an all-``baseline`` input and restores x's values on the round_half_up(f * n)
    most salient bins. Starts at p_c(all baseline), ends at p_c(x). One ``predict`` call.
    Returns (fractions, probs). Higher area is better.
    """
    return _curve(predict, x, saliency, c, steps, baseline, insert=True)


def curve_auc(fractions: np.ndarray, probs: np.ndarray) -> float:
    """Area under a deletion/insertion curve by the trapezoid rule."""
    f = np.asarray(fractions, np.float64)
    p = np.asarray(probs, np.float64)
    return float(np.sum(np.diff(f) * (p[1:] + p[:-1]) / 2.0))


# ------------------------------------------------------------------- table
METRIC_KEYS = ("AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "deletion_auc", "insertion_auc",
               "mask_mean", "n")


def metrics_table(predict: Predict, x_batch: np.ndarray, saliency_batch: np.ndarray,
                  classes=None, top_percent: float = DEFAULT_TOP_PERCENT, baseline: float = 0.0,
                  steps: int | None = 20, random_seed: int | None = None) -> dict[str, dict[str, float]]:
    """All metrics, averaged over a batch, for each mask type: ``{"binary": {...}, "soft": {...}}``.

    x_batch, saliency_batch: (n, frames, n_mels) (a single (frames, n_mels) map is also taken).
    classes: the class explained per input (default: the model's prediction on x).
    Each row holds ``METRIC_KEYS``: AI, AD, AG in percent, FF as a probability difference,
    Fid-In as a share in [0, 1], SPS and COMP computed on the MASK (the explanation that is
    applied, as the L-MAC recipe passes its mask to Quantus; for a binary mask they depend only
    on ``top_percent``), the mean deletion/insertion AUC (these depend on the saliency ranking
    only, so they are the same in every row), the mask's mean value and n.
    ``steps=None`` skips the curves (AUCs NaN), for a caller that draws them itself.
    ``random_seed`` given: adds a "random" row, a uniformly random saliency map per input
    turned into a binary mask with the same ``top_percent`` (the chance baseline).
    ``predict`` is called once on x_batch, twice per mask type on the whole batch, and once per
    input and curve (steps + 1 inputs); chunk inside ``predict`` if memory requires.
    """
    x = _as_batch(x_batch)
    sal = _as_batch(saliency_batch)
    if sal.shape != x.shape:
        raise ValueError(f"saliency shape {sal.shape} != input shape {x.shape}")
    p = _probs(predict, x)
    c = _classes(p, classes)
    rows = np.arange(len(x))
    pc = p[rows, c]

    def curves(saliencies):
        if steps is None:
            return float("nan"), float("nan")
        dels, ins = [], []
        for xi, si, ci in zip(x, saliencies, c):
            dels.append(curve_auc(*deletion_curve(predict, xi, si, int(ci), steps, baseline)))
            ins.append(curve_auc(*insertion_curve(predict, xi, si, int(ci), steps, baseline)))
        return float(np.mean(dels)), float(np.mean(ins))

    def row(masks, auc_pair):
        o_in = _probs(predict, apply_mask(x, masks, baseline))
        o_out = _probs(predict, apply_mask(x, 1.0 - masks, baseline))
        oc_in, oc_out = o_in[rows, c], o_out[rows, c]
        return {
            "AI": float(np.mean(_ai(pc, oc_in))),
            "AD": float(np.mean(_ad(pc, oc_in))),
            "AG": float(np.mean(_ag(pc, oc_in))),
            "FF": float(np.mean(pc - oc_out)),
            "Fid-In": float(np.mean(o_in.argmax(axis=1) == c)),
            "SPS": float(np.mean([sparseness(m) for m in masks])),
            "COMP": float(np.mean([complexity(m) for m in masks])),
            "deletion_auc": auc_pair[0],
            "insertion_auc": auc_pair[1],
            "mask_mean": float(np.mean(masks)),
            "n": len(x),
        }

    aucs = curves(sal)
    table = {
        "binary": row(np.stack([binary_mask(s, top_percent) for s in sal]), aucs),
        "soft": row(np.stack([soft_mask(s) for s in sal]), aucs),
    }
    if random_seed is not None:
        rng = np.random.default_rng(random_seed)
        rand = rng.random(sal.shape)
        table["random"] = row(np.stack([binary_mask(r, top_percent) for r in rand]), curves(rand))
    return table
