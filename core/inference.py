"""Loading a trained model directory safely, and classifying recordings of any length."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backends import ModelDirError, load_predictor
from .features import FEATURE_VERSION, FeatureConfig, clip_features
from .reports import latest_runs
from .windows import iter_windows


def read_model_config(model_dir) -> dict:
    """The validated ``config.json`` of ``model_dir`` (classes, feature parameters, provenance)."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir}: no such model directory (train one first, e.g. python enhance.py)")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing, so {model_dir} is not a trained model directory")
    try:
        config = json.loads(path.read_text())
        config["feature_config"] = FeatureConfig.from_dict(config["features"])
        classes = config["classes"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{path}: incompatible model config ({type(e).__name__}: {e})") from None
    if config["feature_config"].version != FEATURE_VERSION:
        raise ModelDirError(f"{path}: features version {config['feature_config'].version}, this toolkit "
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


class Classifier:
    """A trained model plus the feature front end it was trained with.

    ``backend`` picks the runtime (see :mod:`backends`): "keras" loads the
    ``.keras`` file in safe mode (no deserialised code runs), "onnx" and
    "tflite" the files export.py writes, "auto" the fastest one present. Labels
    come from ``config.json``: nothing in a model directory is ever unpickled.
    """

    def __init__(self, model_dir, backend: str = "auto"):
        self.model_dir = Path(model_dir)
        self.config = read_model_config(self.model_dir)
        self.cfg: FeatureConfig = self.config["feature_config"]
        self.classes: list[str] = self.config["classes"]
        self.predictor = load_predictor(self.model_dir, backend)
        self.backend: str = self.predictor.name
        expected = (self.cfg.n_frames, self.cfg.n_mels)
        if self.predictor.input_shape != expected or self.predictor.n_classes != len(self.classes):
            raise ModelDirError(f"{self.model_dir} ({self.backend}): model maps {self.predictor.input_shape} to "
                                f"{self.predictor.n_classes} classes, config says {expected} to "
                                f"{len(self.classes)}")

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, classes) for a feature batch (n, frames, mels)."""
        return self.predictor.predict(np.asarray(x, np.float32))

    def classify_file(self, path, window_seconds: float | None = None, hop_seconds: float | None = None,
                      batch: int = 16) -> tuple[np.ndarray, list[tuple[float, float, np.ndarray]]]:
        """Classify a recording of any length: (mean probabilities, [(start_s, end_s, probs)] per window).

        Long recordings are cut into overlapping windows (the model's 16 s span by
        default) and streamed, so memory stays bounded; the file's probabilities
        are the mean over its windows.
        """
        windows, spans, pending = [], [], []

        def flush():
            probs = self.predict_features(np.stack(pending))
            windows.extend((a, b, p) for (a, b), p in zip(spans[len(windows):], probs))
            pending.clear()

        for start, end, audio in iter_windows(path, self.cfg, window_seconds, hop_seconds):
            spans.append((start, end))
            pending.append(clip_features(audio, self.cfg))
            if len(pending) == batch:
                flush()
        if pending:
            flush()
        return np.mean([p for _, _, p in windows], axis=0), windows
