"""What a model directory stores to calibrate its confidence and to say "unknown".

At the end of training, :meth:`OpenSet.fit` takes the logits and embeddings
(:mod:`core.model_views`) of the Training and validation clips and keeps:

- a temperature fitted on validation (temperature scaling, Guo et al. 2017),
  applied to the logits by every backend;
- the head's output ``activation``: ``softmax`` for every single-label
  model, ``sigmoid`` for a multi-label one (train_vgg.py), whose classes
  are independent. For a sigmoid head the one temperature divides each
  logit before its own sigmoid (fitted on the binary NLL), ``msp`` is
  1 - the largest sigmoid, ``entropy`` the sum of the per-class binary
  entropies and ``energy`` the joint energy (Wang et al. 2021); the
  embedding scores need no change;
- the statistics each embedding score needs: class centroids (cosine),
  class means and a shared precision matrix (Mahalanobis), a bank of
  Training embeddings (k nearest neighbours);
- for every score, the threshold that keeps ``keep`` (95 %) of the
  validation clips; the model's ``score`` is the one a clip is judged by.

Scalars go in ``config.json`` under ``"open_set"``, arrays as ``.npy`` files
in ``open_set/`` (loaded with ``allow_pickle=False``). Everything here is
numpy, so the ONNX and TFLite backends score clips exactly as Keras does.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import openset
from .calibration import activate, fit_binary_temperature, fit_temperature
from .reports import atomic_write

ARRAYS_DIR = "open_set"
# Scores a model can use at prediction time on any backend (MC dropout needs Keras and many passes).
DEPLOYABLE_SCORES = ("msp", "entropy", "energy", "cosine", "mahalanobis", "knn")
EMBEDDING_SCORES = ("cosine", "mahalanobis", "knn")   # need the embedding output of an export
DEFAULT_SCORE = "msp"   # when there are no validation negatives to choose by
# Ties in validation AUROC (common: negatives of the kinds trained on are easy) go to the first of these.
SCORE_PREFERENCE = ("msp", "energy", "entropy", "mahalanobis", "cosine", "knn")
DEFAULT_KEEP = 0.95
KNN_K = 5


@dataclasses.dataclass
class OpenSet:
    """Calibration and rejection statistics of one model, fitted on its Training and validation clips."""
    temperature: float
    score: str
    thresholds: dict[str, float]
    keep: float
    centroids: np.ndarray           # (C, D) unit vectors
    means: np.ndarray               # (C, D)
    precision: np.ndarray           # (D, D)
    bank: np.ndarray                # (N, D) Training embeddings
    k: int = KNN_K
    activation: str = "softmax"     # the head's: "softmax", or "sigmoid" for a multi-label model

    @classmethod
    def fit(cls, train_embeddings, train_labels, val_logits, val_embeddings, val_labels, n_classes: int,
            score: str = DEFAULT_SCORE, keep: float = DEFAULT_KEEP, activation: str = "softmax") -> "OpenSet":
        """Fit the temperature and score statistics, then every score's threshold on validation.

        A sigmoid head's temperature is fitted against one-hot targets of the
        validation labels (each clip holds one animal).
        """
        if score not in DEPLOYABLE_SCORES:
            raise ValueError(f"unknown score {score!r}; choose from {', '.join(DEPLOYABLE_SCORES)}")
        train_embeddings = np.asarray(train_embeddings, np.float64)
        means, precision = openset.fit_mahalanobis(train_embeddings, train_labels, n_classes)
        temperature = (fit_temperature(val_logits, val_labels) if activation == "softmax" else
                       fit_binary_temperature(val_logits, np.eye(np.shape(val_logits)[1])[val_labels]))
        fitted = cls(temperature=temperature, score=score, thresholds={}, keep=keep,
                     centroids=openset.class_centroids(train_embeddings, train_labels, n_classes),
                     means=means, precision=precision, bank=train_embeddings,
                     k=min(KNN_K, len(train_embeddings)), activation=activation)
        val_scores = fitted.all_scores(val_logits, val_embeddings)
        fitted.thresholds = {name: openset.rejection_threshold(s, keep) for name, s in val_scores.items()}
        return fitted

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated class probabilities: softmax (or sigmoid) of logits / temperature."""
        return activate(logits, self.activation, self.temperature)

    def all_scores(self, logits, embeddings) -> dict[str, np.ndarray]:
        """Every deployable OOD score of each row (higher: more likely unknown)."""
        probs = self.probabilities(logits)
        return {name: self._score(name, logits, embeddings, probs) for name in DEPLOYABLE_SCORES}

    def ood_score(self, logits, embeddings, score: str | None = None) -> np.ndarray:
        """The OOD score of each row under ``score`` (default: the model's own)."""
        name = score or self.score
        if name not in DEPLOYABLE_SCORES:
            raise ValueError(f"unknown score {name!r}; choose from {', '.join(DEPLOYABLE_SCORES)}")
        return self._score(name, logits, embeddings, self.probabilities(logits))

    def _score(self, name: str, logits, embeddings, probs) -> np.ndarray:
        # Animals are the first len(centroids) outputs; a reserved background output, if any, comes last
        # and counts against a clip: its probability lowers the animals' maximum, its logit is left out.
        animals = len(self.centroids)
        if name == "msp":
            return openset.max_probability_score(probs[:, :animals])
        sigmoid = self.activation == "sigmoid"
        if name == "entropy":
            return openset.binary_entropy_score(probs) if sigmoid else openset.entropy_score(probs)
        if name == "energy":
            energy = openset.joint_energy_score if sigmoid else openset.energy_score
            return energy(np.asarray(logits)[:, :animals], self.temperature)
        if name == "cosine":
            return openset.cosine_centroid_score(embeddings, self.centroids)
        if name == "mahalanobis":
            return openset.mahalanobis_score(embeddings, self.means, self.precision)
        return openset.knn_score(embeddings, self.bank, self.k)

    # ------------------------------------------------------------ a model directory's files

    def config(self) -> dict:
        """The JSON part, stored under ``"open_set"`` in ``config.json``."""
        return {"temperature": self.temperature, "score": self.score, "threshold": self.thresholds[self.score],
                "thresholds": self.thresholds, "keep": self.keep, "k": self.k, "arrays": ARRAYS_DIR,
                "activation": self.activation}

    def save_arrays(self, model_dir) -> None:
        """Write the arrays into ``model_dir``/open_set/ (plain ``.npy``, no pickle)."""
        for name in ("centroids", "means", "precision", "bank"):
            atomic_write(Path(model_dir) / ARRAYS_DIR / f"{name}.npy", npy_bytes(getattr(self, name)))

    @classmethod
    def load(cls, model_dir, config: dict) -> "OpenSet":
        """The statistics saved in ``model_dir`` (``config`` is its ``config.json``'s ``"open_set"``)."""
        arrays = {name: np.load(Path(model_dir) / config["arrays"] / f"{name}.npy", allow_pickle=False)
                  for name in ("centroids", "means", "precision", "bank")}
        return cls(temperature=float(config["temperature"]), score=config["score"],
                   thresholds={k: float(v) for k, v in config["thresholds"].items()}, keep=float(config["keep"]),
                   k=int(config["k"]), activation=config.get("activation", "softmax"), **arrays)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in ``.npy`` format, without pickle."""
    import io
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()
