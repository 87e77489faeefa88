"""core.training.fit_classifier: early stopping and its warm-up."""
import argparse
from pathlib import Path

import numpy as np
import pytest

from core.dataset import Clips, DataSplits
from core.training import fit_classifier


def diverging_splits() -> DataSplits:
    """Validation labels are the training labels swapped: the better the fit, the higher the validation loss."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 32)
    x = (rng.standard_normal((64, 4)) + 3 * y[:, None]).astype(np.float32)
    files, hashes = [Path(f"{i}.wav") for i in range(64)], [str(i) for i in range(64)]
    train, swapped = Clips(x, y, files, hashes), Clips(x, 1 - y, files, hashes)
    return DataSplits(train, swapped, train, ["a", "b"], "hash", 0)


@pytest.mark.parametrize("warmup, epochs_run", [(0, 2), (3, 5)])
def test_patience_counts_from_the_end_of_the_warm_up(tmp_path, warmup, epochs_run):
    """Validation loss rises every epoch: patience 1 stops one epoch after the first epoch it watches."""
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    args = argparse.Namespace(epochs=8, batch_size=16, lr=0.05, patience=1, quiet=True)
    history = fit_classifier(model, diverging_splits(), args, tmp_path, warmup_epochs=warmup)
    assert np.all(np.diff(history["val_loss"]) > 0)
    assert len(history) == epochs_run
