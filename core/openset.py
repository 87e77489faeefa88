"""Open-set recognition: scores that flag clips of no known class, and their evaluation.

Sign convention
---------------
Every ``*_score`` function returns an **OOD score**, one float per row, where
**higher means more likely unknown** (out-of-distribution). A clip is rejected
when its score is above a threshold chosen on in-distribution validation clips
(:func:`rejection_threshold`); the evaluation functions take the scores of
in-distribution clips and of out-of-distribution clips separately and treat
OOD as the positive class, except :func:`fpr_at_tpr` which follows the
literature's "FPR at 95 % TPR" (see there).

Inputs
------
- ``probs``: ``(n, C)`` softmax outputs (what the toolkit's models return);
- ``logits``: ``(n, C)`` pre-softmax outputs (only :func:`energy_score` needs
  true logits; see its note on log-probabilities);
- ``prob_samples``: ``(S, n, C)`` softmax outputs of ``S`` stochastic passes
  (dropout kept on at inference);
- ``embeddings``: ``(n, D)`` penultimate-layer features of the clips.

scikit-learn is imported inside the functions that fit or evaluate, so that
scoring at prediction time does not pay its import (about a second).
"""
import numpy as np
from scipy.special import entr, logsumexp

SCORES = {
    "msp": "1 - maximum softmax probability (Hendrycks & Gimpel 2017); needs probs",
    "entropy": "predictive entropy of the softmax, nats; needs probs",
    "energy": "-T logsumexp(logits / T) (Liu et al. 2020); needs pre-softmax logits",
    "mc_msp": "1 - max of the mean of S dropout passes' probs; needs (S, n, C) samples",
    "mc_variance": "variance across S dropout passes, averaged over classes; needs (S, n, C) samples",
    "cosine": "1 - max cosine similarity to a class centroid; needs embeddings",
    "mahalanobis": "min squared Mahalanobis distance to a class mean, tied covariance (Lee et al. 2018)",
    "knn": "distance to the k-th nearest L2-normalised training embedding (Sun et al. 2022)",
}


# ---------------------------------------------------------------------------------------------
# scores from the classifier's outputs

def max_probability_score(probs) -> np.ndarray:
    """``1 - max_c probs[:, c]``: 0 for a one-hot row, ``1 - 1/C`` for a uniform one."""
    return 1.0 - np.max(np.asarray(probs, dtype=np.float64), axis=-1)


def entropy_score(probs) -> np.ndarray:
    """Predictive entropy ``-sum_c p_c log p_c`` in nats (``0 log 0 = 0``); at most ``log C``."""
    return np.sum(entr(np.asarray(probs, dtype=np.float64)), axis=-1)


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """Free energy ``-T * logsumexp(logits / T)`` per row (Liu et al., NeurIPS 2020).

    In-distribution clips tend to have large logits, hence low (very negative)
    energy; the energy itself is therefore the OOD score.

    Notes
    -----
    Needs the *pre-softmax* logits. On log-probabilities the score carries no
    information at ``T = 1``: ``logsumexp(log p) = log 1 = 0`` for every row,
    because the shift that softmax removes is exactly what the energy measures.
    """
    z = np.asarray(logits, dtype=np.float64)
    return -temperature * logsumexp(z / temperature, axis=-1)


def binary_entropy_score(probs) -> np.ndarray:
    """Sum over classes of each independent probability's binary entropy, nats; at most ``C log 2``.

    The entropy score of a sigmoid (multi-label) head, whose rows need not
    sum to one: a class at 0.5 is the most uncertain, one at 0 or 1 not at all.
    """
    p = np.asarray(probs, dtype=np.float64)
    return np.sum(entr(p) + entr(1.0 - p), axis=-1)


def joint_energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """Negative joint energy ``-T * sum_c log(1 + exp(z_c / T))`` of a sigmoid head (Wang et al., NeurIPS 2021).

    The multi-label counterpart of :func:`energy_score`: every class a clip
    evidently belongs to lowers the score, so a clip of no known class scores high.
    """
    z = np.asarray(logits, dtype=np.float64)
    return -temperature * np.sum(np.logaddexp(0.0, z / temperature), axis=-1)


def mc_dropout_scores(prob_samples) -> tuple[np.ndarray, np.ndarray]:
    """Two OOD scores from ``S`` stochastic forward passes (Monte Carlo dropout, Gal & Ghahramani 2016).

    Parameters
    ----------
    prob_samples : array_like, shape (S, n, C)
        Softmax outputs of ``S`` passes with dropout active, for ``n`` clips.

    Returns
    -------
    mean_msp : ndarray, shape (n,)
        ``1 - max_c mean_s p[s, i, c]``: the max-probability score of the mean
        prediction.
    mean_variance : ndarray, shape (n,)
        ``mean_c var_s p[s, i, c]``: the population variance (``ddof=0``) of
        each class's probability across the passes, averaged over the ``C``
        classes; 0 when all passes agree.
    """
    samples = np.asarray(prob_samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"prob_samples must be (S, n, C), got shape {samples.shape}")
    return 1.0 - samples.mean(axis=0).max(axis=-1), samples.var(axis=0).mean(axis=-1)


# ---------------------------------------------------------------------------------------------
# scores from embeddings

def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    # the tiny floor leaves an all-zero vector at zero instead of dividing by 0
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _class_means(embeddings: np.ndarray, labels, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    if len(counts) > n_classes or np.any(counts == 0):
        raise ValueError(f"every class in [0, {n_classes}) needs at least one embedding; counts {counts.tolist()}")
    sums = np.zeros((n_classes, embeddings.shape[1]))
    np.add.at(sums, labels, embeddings)
    return sums / counts[:, None]


def class_centroids(embeddings, labels, n_classes: int) -> np.ndarray:
    """Unit-length class directions for :func:`cosine_centroid_score`.

    The centroid of class ``c`` is the mean of its L2-normalised embeddings,
    normalised again; normalising first makes every clip weigh the same
    whatever its embedding's norm.

    Returns
    -------
    centroids : ndarray, shape (n_classes, D)
    """
    unit = _l2_normalise(embeddings)
    return _l2_normalise(_class_means(unit, labels, n_classes))


def nearest_centroid(embeddings, centroids) -> tuple[np.ndarray, np.ndarray]:
    """The most similar centroid of each row and its cosine distance.

    Returns
    -------
    index : ndarray of int, shape (n,)
        The class whose centroid has the largest cosine similarity (first on ties).
    distance : ndarray, shape (n,)
        ``1 - cos(embedding, centroid[index])``, in ``[0, 2]``; equal to
        :func:`cosine_centroid_score`, exposed here for histograms.
    """
    similarity = _l2_normalise(embeddings) @ _l2_normalise(centroids).T
    index = np.argmax(similarity, axis=1)
    return index, 1.0 - similarity[np.arange(len(similarity)), index]


def cosine_centroid_score(embeddings, centroids) -> np.ndarray:
    """``1 - max_c cos(embedding, centroid_c)``: 0 on a centroid's direction, up to 2 opposite all of them."""
    return nearest_centroid(embeddings, centroids)[1]


def fit_mahalanobis(embeddings, labels, n_classes: int,
                    shrinkage: str | float | None = "ledoit-wolf") -> tuple[np.ndarray, np.ndarray]:
    """Class means and a shared (tied) precision matrix for :func:`mahalanobis_score` (Lee et al. 2018).

    The covariance is estimated from the class-centred embeddings
    ``x_i - mean[label_i]`` (treated as zero-mean, i.e. divided by ``n``, as
    in Lee et al.), with:

    - ``"ledoit-wolf"`` (default): :class:`sklearn.covariance.LedoitWolf`, a
      shrinkage toward a scaled identity chosen from the data; well
      conditioned even when ``D`` exceeds the number of clips;
    - a float in ``[0, 1]``: :class:`sklearn.covariance.ShrunkCovariance` with
      that fixed shrinkage;
    - ``None``: the plain empirical covariance (pseudo-inverted if singular).

    Returns
    -------
    means : ndarray, shape (n_classes, D)
    precision : ndarray, shape (D, D)
        The inverse of the shared covariance, symmetric.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    means = _class_means(embeddings, labels, n_classes)
    centred = embeddings - means[np.asarray(labels)]
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf, ShrunkCovariance
    if shrinkage == "ledoit-wolf":
        estimator = LedoitWolf(assume_centered=True)
    elif shrinkage is None:
        estimator = EmpiricalCovariance(assume_centered=True)
    elif isinstance(shrinkage, (int, float)) and 0 <= shrinkage <= 1:
        estimator = ShrunkCovariance(shrinkage=float(shrinkage), assume_centered=True)
    else:
        raise ValueError(f"shrinkage must be 'ledoit-wolf', a float in [0, 1] or None, got {shrinkage!r}")
    return means, estimator.fit(centred).precision_


def mahalanobis_score(embeddings, means, precision) -> np.ndarray:
    """``min_c (x - mean_c)^T precision (x - mean_c)``: squared distance to the closest class mean.

    With ``precision = I`` this is the squared Euclidean distance to the
    nearest mean.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    best = np.full(len(x), np.inf)
    for mean in np.asarray(means, dtype=np.float64):   # one (n, D) difference at a time: C is small
        diff = x - mean
        best = np.minimum(best, np.einsum("nd,de,ne->n", diff, precision, diff))
    return best


def knn_score(embeddings, bank, k: int = 5, chunk_size: int = 1024) -> np.ndarray:
    """Euclidean distance to the ``k``-th nearest bank embedding, both L2-normalised (Sun et al., ICML 2022).

    Parameters
    ----------
    embeddings : array_like, shape (n, D)
        Clips to score.
    bank : array_like, shape (m, D)
        Training embeddings. Do not score the bank's own clips: each would find
        itself at distance 0.
    k : int, 1 <= k <= m
    chunk_size : int
        Rows scored at a time; memory stays at ``chunk_size * m`` distances.

    Returns
    -------
    score : ndarray, shape (n,)
        In ``[0, 2]``; for unit vectors ``|a - b| = sqrt(2 - 2 cos(a, b))``.
    """
    bank = _l2_normalise(bank)
    if not 1 <= k <= len(bank):
        raise ValueError(f"k must be in [1, {len(bank)}], got {k}")
    queries = _l2_normalise(embeddings)
    score = np.empty(len(queries))
    for start in range(0, len(queries), chunk_size):
        cosine = queries[start:start + chunk_size] @ bank.T
        # rounding can push 2 - 2cos a hair below 0 for identical vectors
        distance = np.sqrt(np.maximum(2.0 - 2.0 * cosine, 0.0))
        score[start:start + chunk_size] = np.partition(distance, k - 1, axis=1)[:, k - 1]
    return score


# ---------------------------------------------------------------------------------------------
# evaluation

def _stack(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    in_scores, out_scores = np.ravel(in_scores), np.ravel(out_scores)
    if not len(in_scores) or not len(out_scores):
        raise ValueError("need at least one in-distribution and one out-of-distribution score")
    is_out = np.concatenate([np.zeros(len(in_scores), int), np.ones(len(out_scores), int)])
    return is_out, np.concatenate([in_scores, out_scores])


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve with OOD as the positive class.

    The probability that a random OOD clip scores higher than a random
    in-distribution one (ties count half): 1.0 separates perfectly, 0.5 is chance.
    """
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(*_stack(in_scores, out_scores)))


def aupr(in_scores, out_scores) -> float:
    """Area under the precision-recall curve with OOD as the positive class ("AUPR-out").

    Computed as average precision (:func:`sklearn.metrics.average_precision_score`);
    its chance level is the share of OOD clips, not 0.5.
    """
    from sklearn.metrics import average_precision_score
    return float(average_precision_score(*_stack(in_scores, out_scores)))


def rejection_threshold(in_scores, keep: float = 0.95) -> float:
    """The smallest score ``t`` with at least ``keep`` of ``in_scores`` at or below it.

    Clips are accepted when ``score <= t``. Exactly ``ceil(keep * n)`` of ``n``
    distinct validation scores are accepted; ties at ``t`` can only raise the
    accepted share. ``keep * n`` within 1e-9 of an integer counts as that
    integer, so ``keep=0.95`` on 20 scores accepts 19, not 20.
    """
    scores = np.sort(np.ravel(in_scores))
    if not 0 < keep <= 1 or not len(scores):
        raise ValueError(f"keep must be in (0, 1] and in_scores non-empty, got keep={keep}, n={len(scores)}")
    n_accepted = int(np.ceil(keep * len(scores) - 1e-9))
    return float(scores[max(n_accepted, 1) - 1])


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95) -> float:
    """FPR at 95 % TPR ("FPR95"): the share of OOD clips accepted when ``tpr`` of in-distribution ones are.

    Follows the literature's definition (Liang et al. 2018, Hendrycks et al.),
    in which in-distribution is the *positive* class: the threshold is
    :func:`rejection_threshold` of ``in_scores`` with ``keep=tpr``, and the
    result is the fraction of ``out_scores`` at or below it (accepted as
    known animals). Lower is better; 0 means no OOD clip slips through.
    """
    threshold = rejection_threshold(in_scores, keep=tpr)
    return float(np.mean(np.ravel(out_scores) <= threshold))


def accuracy_after_rejection(pred, labels, scores, threshold: float) -> tuple[float, float]:
    """Closed-set accuracy of in-distribution clips when rejected ones count as wrong.

    A clip is accepted when ``score <= threshold``; it is right when accepted
    and ``pred == label``.

    Returns
    -------
    accuracy : float
        Correct accepted clips over *all* clips (so rejecting a clip never helps).
    rejected_share : float
        Share of clips with ``score > threshold``.
    """
    pred, labels, scores = np.ravel(pred), np.ravel(labels), np.ravel(scores)
    accepted = scores <= threshold
    return float(np.mean(accepted & (pred == labels))), float(np.mean(~accepted))
