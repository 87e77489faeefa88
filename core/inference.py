"""Loading trained model directories safely, and classifying recordings of any length (or saying "unknown").

:class:`Classifier` is one model directory; :class:`Ensemble` several, whose
calibrated probabilities it averages. Both cut a recording into windows and
decide each (:class:`WindowClassifier`), and :func:`load_classifier` gives
whichever a list of directories asks for.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from .allocator import keep_freed_memory
from .audio import warn
from .backbones import BackboneUnavailable
from .backends import ModelDirError, load_predictor
from .calibration import softmax
from .features import FEATURE_VERSION, FeatureConfig
from .front_ends import MFCC, LogMel, front_end_of
from .multilabel import listed_classes
from .negatives import BACKGROUND
from .rejection import EMBEDDING_SCORES, OpenSet
from .reports import latest_runs
from .windows import iter_windows


def read_model_config(model_dir) -> dict:
    """The validated ``config.json`` of ``model_dir`` (classes, front end, provenance)."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir}: no such model directory (train one first, e.g. python enhance.py)")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing, so {model_dir} is not a trained model directory")
    try:
        config = json.loads(path.read_text())
        front_end = front_end_of(config)
        classes = config["classes"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, BackboneUnavailable) as e:
        raise ModelDirError(f"{path}: incompatible model config ({type(e).__name__}: {e})") from None
    if isinstance(front_end, (LogMel, MFCC)) and front_end.cfg.version != FEATURE_VERSION:
        raise ModelDirError(f"{path}: features version {front_end.cfg.version}, this toolkit "
                            f"reads version {FEATURE_VERSION}; retrain the model")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ModelDirError(f"{path}: 'classes' must list at least two class names")
    return config


def default_model_dir(root="model") -> Path:
    """The best trained variant by macro-F1 in ``root``/results.csv, else model/enhance, else model/baseline."""
    runs = latest_runs(Path(root) / "results.csv")
    if not runs.empty:
        return Path(runs.sort_values("macro_f1").iloc[-1]["model_dir"])
    for variant in ("enhance", "baseline"):
        if (Path(root) / variant / "config.json").exists():
            return Path(root) / variant
    return Path(root) / "enhance"


UNKNOWN = "unknown"   # the label of a clip the model rejects as none of its classes


@dataclasses.dataclass
class Window:
    """One analysis window of a recording: calibrated probabilities and OOD score (None: cannot reject)."""
    start: float
    end: float
    probs: np.ndarray
    ood_score: float | None


@dataclasses.dataclass
class Recording:
    """A classified recording: its windows, and the file's probabilities and OOD score drawn from them."""
    probs: np.ndarray
    ood_score: float | None
    windows: list[Window]


class WindowClassifier:
    """What :class:`Classifier` and :class:`Ensemble` share: deciding a window, classifying a recording.

    A subclass sets ``classes``, ``cfg`` (the sample rate and window span that
    recordings are cut with), ``reject`` and ``threshold``, and implements
    :meth:`analyse_audio`. A multi-label model (``multi_label``) names every
    class above its own threshold (:meth:`labels`).
    """
    classes: list[str]
    cfg: FeatureConfig
    reject: bool
    threshold: float | None
    multi_label = False

    @functools.cached_property
    def animals(self) -> list[int]:
        """The outputs that are animals: all but a reserved background output."""
        return [i for i, c in enumerate(self.classes) if c != BACKGROUND]

    def analyse_audio(self, windows: list[np.ndarray], sr: int | None = None,
                      starts: list[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities (n, classes) and OOD scores (n,) (None: cannot reject) of audio windows.

        The windows are at ``sr`` Hz (default: ``cfg.sr``). ``starts``, their
        first samples when they are successive windows of one recording, lets
        the front end share the work of their overlap.
        """
        raise NotImplementedError

    def decide(self, probs: np.ndarray, ood_score: float | None = None) -> tuple[str, float]:
        """The label and its confidence: the most probable animal, or :data:`UNKNOWN` when rejected.

        A clip is rejected when its OOD score is above the threshold, or when a
        reserved background output (``--outliers background``) wins; with
        ``reject=False`` the most probable animal is named whatever the score.
        """
        best = self.animals[int(np.argmax(probs[self.animals]))]
        if self.rejects(probs, ood_score):
            return UNKNOWN, float(probs[best])
        return self.classes[best], float(probs[best])

    def rejects(self, probs: np.ndarray, ood_score: float | None) -> bool:
        """Whether the rejection rule calls this clip unknown (never with ``reject=False``)."""
        best = self.animals[int(np.argmax(probs[self.animals]))]
        background_wins = int(np.argmax(probs)) != best   # a reserved background output is never an animal
        return self.reject and (background_wins or ood_score is not None and ood_score > self.threshold)

    def labels(self, probs: np.ndarray, ood_score: float | None = None) -> list[str]:
        """Every class this clip is given, most probable first: :meth:`decide`'s label, none when unknown."""
        label, _ = self.decide(probs, ood_score)
        return [] if label == UNKNOWN else [label]

    def recording_probs(self, window_probs: list[np.ndarray]) -> np.ndarray:
        """A recording's probabilities from those of the windows that count: their mean."""
        return np.mean(window_probs, axis=0)

    def classify(self, path, window_seconds: float | None = None, hop_seconds: float | None = None,
                 batch: int = 16) -> Recording:
        """Classify a recording of any length, window by window.

        Long recordings are cut into overlapping windows (the model's 16 s span by
        default) and streamed, so memory stays bounded. The recording's OOD score
        is its most animal-like window's (a call in one window is enough), and
        its probabilities are the mean over the windows the model accepts (over
        all of them when it accepts none).
        """
        windows, spans, pending = [], [], []

        def flush():
            starts = [round(a * self.cfg.sr) for a, _ in spans[len(windows):]]
            probs, scores = self.analyse_audio(pending, starts=starts)
            scores = [None] * len(probs) if scores is None else scores.tolist()
            windows.extend(Window(a, b, p, s) for (a, b), p, s in zip(spans[len(windows):], probs, scores))
            pending.clear()

        for start, end, audio in iter_windows(path, self.cfg, window_seconds, hop_seconds):
            spans.append((start, end))
            pending.append(audio)
            if len(pending) == batch:
                flush()
        if pending:
            flush()
        if windows[0].ood_score is None:
            return Recording(self.recording_probs([w.probs for w in windows]), None, windows)
        accepted = [w for w in windows if self.decide(w.probs, w.ood_score)[0] != UNKNOWN] or windows
        return Recording(self.recording_probs([w.probs for w in accepted]), min(w.ood_score for w in windows),
                         windows)


class Classifier(WindowClassifier):
    """A trained model plus the front end, calibration and rejection rule it was trained with.

    The front end (:mod:`core.front_ends`) is the one ``config.json`` names:
    log-Mel when it names none, as in every model trained before front ends
    had names, or a pretrained backbone's embeddings. ``cfg`` is its
    :class:`FeatureConfig` (sample rate, window span).

    ``backend`` picks the runtime (see :mod:`core.backends`): "keras" loads the
    ``.keras`` file in safe mode (no deserialised code runs), "onnx" and
    "tflite" the files export.py writes, "auto" the fastest one present. Labels
    come from ``config.json`` and arrays from ``.npy`` files: nothing in a
    model directory is ever unpickled.

    Probabilities are calibrated (temperature scaling) and a clip whose OOD
    score is above the model's threshold is labelled :data:`UNKNOWN`, unless
    ``reject`` is False. ``threshold`` overrides the model's threshold. A model
    trained before open-set rejection existed has neither: it gets its plain
    softmax and one warning that it cannot reject.

    A multi-label model (``"multi_label": true`` in config.json, a sigmoid
    head) gives a clip every animal whose calibrated probability is at least
    that class's threshold (config.json ``"thresholds"``, chosen on
    validation); its label is the most probable of them, or unknown when
    none is (or the rejection rule rejects the clip). A recording holds a
    class when any window it accepts does: its probabilities are the
    maximum over those windows.
    """

    def __init__(self, model_dir, backend: str = "auto", reject: bool = True, threshold: float | None = None):
        keep_freed_memory()
        self.model_dir = Path(model_dir)
        self.config = read_model_config(self.model_dir)
        try:
            self.front_end = front_end_of(self.config).load()
        except BackboneUnavailable as e:
            raise ModelDirError(f"{self.model_dir}: {e}") from None
        self.cfg: FeatureConfig = self.front_end.cfg
        self.classes: list[str] = self.config["classes"]
        self.predictor = load_predictor(self.model_dir, backend)
        self.backend: str = self.predictor.name
        expected = self.front_end.input_shape
        if self.predictor.input_shape != expected or self.predictor.n_classes != len(self.classes):
            raise ModelDirError(f"{self.model_dir} ({self.backend}): model maps {self.predictor.input_shape} to "
                                f"{self.predictor.n_classes} classes, config says {expected} to "
                                f"{len(self.classes)}")
        self.open_set = load_open_set(self.model_dir, self.config)
        self.activation = self.open_set.activation if self.open_set else "softmax"
        self.multi_label = bool(self.config.get("multi_label", False))
        if self.multi_label:
            self.class_thresholds = class_thresholds(self.model_dir, self.config,
                                                     [self.classes[i] for i in self.animals])
        needs_embedding = self.open_set is not None and self.open_set.score in EMBEDDING_SCORES
        if needs_embedding and not self.predictor.has_embedding:
            raise ModelDirError(f"{self.model_dir} ({self.backend}): the exported file has no embedding output, "
                                f"which the {self.open_set.score} score needs; re-run export.py")
        if reject and self.open_set is None:
            warn(f"{self.model_dir} was trained before open-set rejection: it cannot say '{UNKNOWN}' "
                 f"(retrain it to enable)")
        self.reject = reject and self.open_set is not None
        self.threshold = (threshold if threshold is not None else
                          self.open_set.thresholds[self.open_set.score] if self.open_set else None)
        self.name = f"{self.model_dir} ({self.backend})"
        self.members = [self]

    def analyse(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities (n, classes) and OOD scores (n,) (None: no open-set statistics)."""
        logits, embedding = self.predictor.run(np.asarray(x, np.float32))
        if self.open_set is None:
            return softmax(logits), None
        return self.open_set.probabilities(logits), self.open_set.ood_score(logits, embedding)

    def decide(self, probs: np.ndarray, ood_score: float | None = None) -> tuple[str, float]:
        if not self.multi_label:
            return super().decide(probs, ood_score)
        named = self.labels(probs, ood_score)
        if named:
            return named[0], float(probs[self.classes.index(named[0])])
        return UNKNOWN, float(np.max(probs[self.animals]))

    def labels(self, probs: np.ndarray, ood_score: float | None = None) -> list[str]:
        if not self.multi_label:
            return super().labels(probs, ood_score)
        if self.rejects(probs, ood_score):
            return []
        listed = listed_classes(probs[self.animals], self.class_thresholds)
        if not listed and not self.reject:   # --no-reject: never unknown, so the most probable animal
            listed = [int(np.argmax(probs[self.animals]))]
        return [self.classes[self.animals[i]] for i in listed]

    def recording_probs(self, window_probs: list[np.ndarray]) -> np.ndarray:
        return np.max(window_probs, axis=0) if self.multi_label else super().recording_probs(window_probs)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (n, classes) for a batch of front-end features."""
        return self.analyse(x)[0]

    def analyse_audio(self, windows: list[np.ndarray], sr: int | None = None,
                      starts: list[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        if sr is not None and sr != self.cfg.sr:
            import soxr
            windows = [soxr.resample(w, sr, self.cfg.sr, "HQ") for w in windows]
            starts = None   # resampled apart, the windows no longer share samples
        if starts is None:
            return self.analyse(np.stack([self.front_end.features(w) for w in windows]))
        return self.analyse(self.front_end.window_features(windows, starts))


class Ensemble(WindowClassifier):
    """Several trained models as one: the mean of their calibrated probabilities.

    The members must have the same classes, in the same order. A window is cut
    once, at the highest sample rate among them (on that member's span), and
    resampled for the others. Its OOD score is the share of the members able
    to reject that would call it unknown on their own (by their own scores and
    thresholds); the ensemble rejects it when more than half would
    (``threshold`` 0.5: with two members, when both do).
    """

    def __init__(self, members: list[Classifier], reject: bool = True):
        for m in members:
            if m.activation != "softmax":
                raise ModelDirError(f"{m.model_dir}: a sigmoid (multi-label) model; an ensemble averages "
                                    f"softmax models only")
        for m in members[1:]:
            if m.classes != members[0].classes:
                raise ModelDirError(f"{m.model_dir}: classes {m.classes} differ from {members[0].model_dir}'s "
                                    f"{members[0].classes}, so their probabilities cannot be averaged")
        self.members = members
        self.classes = members[0].classes
        self.cfg = max((m.cfg for m in members), key=lambda cfg: cfg.sr)
        self.can_reject = any(m.reject for m in members)
        self.reject = reject and self.can_reject
        self.threshold = 0.5
        self.backend = "+".join(m.backend for m in members)
        self.name = " + ".join(m.name for m in members)
        self.config = {"variant": "ensemble", "members": [str(m.model_dir) for m in members],
                       "data_dir": members[0].config.get("data_dir")}

    def analyse_audio(self, windows: list[np.ndarray], sr: int | None = None,
                      starts: list[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        results = [m.analyse_audio(windows, sr or self.cfg.sr, starts) for m in self.members]
        probs = np.mean([p for p, _ in results], axis=0)
        if not self.can_reject:
            return probs, None
        votes = [[m.decide(p, s)[0] == UNKNOWN for p, s in zip(member_probs, member_scores)]
                 for m, (member_probs, member_scores) in zip(self.members, results) if m.reject]
        return probs, np.mean(votes, axis=0)


def load_classifier(model_dirs, backend: str = "auto", reject: bool = True,
                    threshold: float | None = None) -> WindowClassifier:
    """A :class:`Classifier` for one model directory, an :class:`Ensemble` for several."""
    dirs = [model_dirs] if isinstance(model_dirs, (str, Path)) else list(model_dirs)
    if len(dirs) == 1:
        return Classifier(dirs[0], backend, reject, threshold)
    if threshold is not None:
        raise ModelDirError("a rejection threshold applies to one model; an ensemble's members reject by their own")
    return Ensemble([Classifier(d, backend) for d in dirs], reject)


def class_thresholds(model_dir: Path, config: dict, animals: list[str]) -> np.ndarray:
    """The multi-label thresholds of ``animals``, in that order, from config.json's ``"thresholds"``."""
    thresholds = config.get("thresholds", {})
    missing = [c for c in animals if c not in thresholds]
    if missing:
        raise ModelDirError(f"{model_dir}: a multi-label model without a threshold for {', '.join(missing)} "
                            f"in config.json; retrain it")
    return np.array([float(thresholds[c]) for c in animals])


def load_open_set(model_dir: Path, config: dict) -> OpenSet | None:
    """The calibration and rejection statistics of ``model_dir``, or None for a model trained before them."""
    if "open_set" not in config:
        return None
    try:
        return OpenSet.load(model_dir, config["open_set"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{model_dir}: damaged open-set statistics ({type(e).__name__}: {e})") from None
