"""A trained model under examination (explain.py, robustness.py, embeddings.py) and the data it is examined on."""
from __future__ import annotations

import argparse
from pathlib import Path

from .dataset import DatasetError, list_class_files, load_clips
from .backends import ModelDirError
from .features import FeatureCache
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

    These commands examine log-Mel inputs; a model on another front end (a
    transfer model's backbone embeddings) raises :class:`core.backends.ModelDirError`
    (one line), as does one that cannot be loaded.
    """
    clf = Classifier(model_dir or default_model_dir(), backend="keras")
    if not isinstance(clf.front_end, LogMel):
        raise ModelDirError(f"{clf.model_dir}: its input is {clf.front_end.input_name} ({clf.front_end.kind} front "
                            f"end); only log-Mel models can be examined")
    return clf


def training_data_dir(config: dict) -> Path:
    """The dataset directory a model's ``config.json`` records (``Animals_Sounds`` if none is recorded)."""
    return Path(config.get("data_dir", "Animals_Sounds"))


def default_data_dir(config: dict) -> Path:
    """The model's training data directory if it still exists here, else ``Animals_Sounds``."""
    recorded = training_data_dir(config)
    return recorded if recorded.is_dir() else Path("Animals_Sounds")


def split_clips(data_dir, split: str, classes: list[str], cfg, cache_dir=None, with_audio: bool = False,
                limit: int | None = None):
    """Clips of ``data_dir``/``split``/<class>/ whose class the model knows, labelled in ``classes`` order.

    Raises :class:`DatasetError` (one line) when the split is missing or holds no such clip.
    """
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
    return clips
