"""A trained model under examination (explain.py, robustness.py, embeddings.py) and the data it is examined on."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .dataset import DatasetError, list_class_files, load_clips
from .features import FeatureCache, real_frames
from .front_ends import LogMel
from .inference import Classifier, default_model_dir


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except None: the help text says what happens then."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def examination_parser(description: str, outputs: str) -> argparse.ArgumentParser:
    """A parser with the flags every examining command takes: --model-dir and --out (default MODEL_DIR/``outputs``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=_ShowDefaults)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="trained model (default: the best in model/results.csv)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: MODEL_DIR/{outputs})")
    return p


def keras_classifier(model_dir=None) -> Classifier:
    """The model in ``model_dir`` (default: the best trained variant) on the Keras backend, which gradients need.

    A model that cannot be loaded raises :class:`core.backends.ModelDirError` (one line).
    """
    return Classifier(model_dir or default_model_dir(), backend="keras")


def feature_scale(front_end, x: np.ndarray) -> np.ndarray:
    """The unit of perturbations of model inputs ``x`` (n, steps, F): one standard deviation, per feature.

    A log-Mel window is z-normalised per clip, so its unit is 1. MFCCs and
    backbone embeddings are not: their unit is each feature's standard
    deviation over the real steps (frames, chunks) of ``x``, so "eps = 0.1"
    means the same share of a feature's spread whatever the front end.
    """
    if isinstance(front_end, LogMel):
        return np.ones(x.shape[-1], np.float32)
    return np.maximum(real_frames(x).std(axis=0), 1e-6).astype(np.float32)


def training_data_dir(config: dict) -> Path:
    """The dataset directory a model's ``config.json`` records (``Animals_Sounds`` if none is recorded)."""
    return Path(config.get("data_dir", "Animals_Sounds"))


def default_data_dir(config: dict) -> Path:
    """The model's training data directory if it still exists here, else ``Animals_Sounds``."""
    recorded = training_data_dir(config)
    return recorded if recorded.is_dir() else Path("Animals_Sounds")


def split_clips(data_dir, split: str, classes: list[str], front_end, cache_dir=None, with_audio: bool = False,
                limit: int | None = None):
    """Clips of ``data_dir``/``split``/<class>/ whose class the model knows, labelled in ``classes`` order.

    Their features ``x`` are ``front_end``'s (the model's input), through the
    cache. Raises :class:`DatasetError` (one line) when the split is missing
    or holds no such clip.
    """
    cfg = front_end.cfg
    folder = Path(data_dir) / split
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such split (pass --data-dir)")
    files, labels = list_class_files(folder)
    keep = [i for i, c in enumerate(labels) if c in classes][:limit]
    clips, _ = load_clips([files[i] for i in keep], [labels[i] for i in keep], classes, cfg,
                          FeatureCache(cache_dir) if cache_dir else None, with_audio=with_audio,
                          desc=f"{split.lower()} clips")
    if len(clips.y) == 0:
        raise DatasetError(f"{folder}: no readable clip of the model's classes ({', '.join(classes)})")
    return front_end.featurize(clips, cache_dir)
