"""core.training.fit_classifier: early stopping and its warm-up; validation on real frames only."""
import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.dataset import Clips, DataSplits
from core.training import fit_classifier, length_bucketed


def diverging_splits() -> DataSplits:
    """Validation labels are the training labels swapped: the better the fit, the higher the validation loss."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 32)
    x = (rng.standard_normal((64, 4)) + 3 * y[:, None]).astype(np.float32)
    files, hashes = [Path(f"{i}.wav") for i in range(64)], [str(i) for i in range(64)]
    train, swapped = Clips(x, y, files, hashes), Clips(x, 1 - y, files, hashes)
    return DataSplits(train, swapped, train, ["a", "b"], "hash", 0)


def odd_clips_shifted(clips: Clips) -> Clips:
    """``clips`` with every odd-numbered one marked a shifted negative (by its hash)."""
    from core.negatives import SHIFTED_PREFIX
    return dataclasses.replace(clips, hashes=[f"{SHIFTED_PREFIX}2/{h}" if int(h) % 2 else h for h in clips.hashes])


@pytest.mark.parametrize("warmup, epochs_run", [(0, 2), (3, 5)])
def test_patience_counts_from_the_end_of_the_warm_up(warmup, epochs_run):
    """Validation loss rises every epoch: patience 1 stops one epoch after the first epoch it watches,
    and the weights of the first epoch, the best, come back."""
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    args = argparse.Namespace(epochs=8, batch_size=16, lr=0.05, patience=1, quiet=True, xla=False)
    history = fit_classifier(model, diverging_splits(), args, warmup_epochs=warmup)
    assert np.all(np.diff(history["val_loss"]) > 0)
    assert len(history) == epochs_run
    val = diverging_splits().val
    restored = model.evaluate(val.x, keras.utils.to_categorical(val.y, 2), batch_size=16, verbose=0)[0]
    assert restored == pytest.approx(history["val_loss"][0], rel=1e-5)


def test_epochs_before_validate_from_are_neither_validated_nor_kept():
    """Validation loss rises every epoch: validated from the fourth epoch on, patience 1 stops at the fifth,
    the fourth's weights come back, and early stopping does not warn about the epochs without validation."""
    import warnings

    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    args = argparse.Namespace(epochs=8, batch_size=16, lr=0.05, patience=1, quiet=True, xla=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit_classifier(model, diverging_splits(), args, lr_schedule="cosine", validate_from=3)
    assert not [w for w in caught if "val_loss" in str(w.message)]
    assert len(history) == 5
    assert history["val_loss"][:3].isna().all() and history["val_loss"][3:].notna().all()
    assert history["loss"].notna().all()
    val = diverging_splits().val
    restored = model.evaluate(val.x, keras.utils.to_categorical(val.y, 2), batch_size=16, verbose=0)[0]
    assert restored == pytest.approx(history["val_loss"][3], rel=1e-5)


def test_the_plateau_schedule_validates_every_epoch_whatever_validate_from():
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    args = argparse.Namespace(epochs=3, batch_size=16, lr=0.05, patience=5, quiet=True, xla=False)
    history = fit_classifier(model, diverging_splits(), args, lr_schedule="plateau", validate_from=2)
    assert len(history) == 3 and history["val_loss"].notna().all()


def test_xla_steps_run_in_loops_of_several_train_as_one_at_a_time(monkeypatch):
    """4 steps an epoch, in calls of 8 (a partial loop each epoch) or one by one: the same history."""
    import keras

    import core.training

    def history(steps_per_execution):
        monkeypatch.setattr(core.training, "STEPS_PER_EXECUTION", steps_per_execution)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        args = argparse.Namespace(epochs=3, batch_size=16, lr=0.05, patience=5, quiet=True, xla=True)
        return fit_classifier(model, diverging_splits(), args)

    looped, single = history(8), history(1)
    assert len(looped) == 3
    np.testing.assert_array_equal(looped.to_numpy(), single.to_numpy())


def test_the_cosine_schedule_counts_the_steps_of_the_epochs_the_batches_draw():
    """Batches of a shorter epoch than the training set: warm-up and decay are counted in their steps."""
    import keras

    from core.training import make_batches
    splits = diverging_splits()
    half_shifted = odd_clips_shifted(splits.train)
    batches = make_batches(lambda idx, rng: splits.train.x[idx], half_shifted, 2, 16, seed=0)   # 32 draws
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    args = argparse.Namespace(epochs=4, batch_size=16, lr=0.05, patience=5, quiet=True, xla=False)
    fit_classifier(model, splits, args, batches, lr_schedule="cosine")
    schedule = model.optimizer._learning_rate
    assert (schedule.warmup_steps, schedule.decay_steps) == (2 * 2, 2 * 2)   # 2 steps an epoch, not 64 / 16
    assert int(model.optimizer.iterations) == 4 * 2


def test_plain_training_arrays_with_shifted_negatives_keep_an_epoch_as_long_as_without_them():
    """A recipe without its own batches: the shifted copies are drawn in the negatives' share, not on top."""
    import keras
    splits = diverging_splits()
    half_shifted = odd_clips_shifted(splits.train)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    args = argparse.Namespace(epochs=3, batch_size=16, lr=0.05, patience=5, quiet=True, xla=False, seed=0)
    fit_classifier(model, dataclasses.replace(splits, train=half_shifted), args)
    assert int(model.optimizer.iterations) == 3 * 2   # 32 draws an epoch, not 64
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    fit_classifier(model, splits, args)
    assert int(model.optimizer.iterations) == 3 * 4   # without shifted copies: the arrays, every clip


def test_length_bucketed_validation_gives_the_padded_windows_outputs_and_loss():
    import keras

    import enhance
    rng = np.random.default_rng(0)
    lengths = [5, 17, 30, 33, 50, 64, 70, 90, 100, 12, 150, 190]
    x = np.zeros((len(lengths), 200, 16), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.standard_normal((n, 16))
    targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, len(lengths))]
    model = enhance.build_model(None, 16, 3)
    model.compile(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05))
    batches = list(length_bucketed(x, targets, 4, 16).as_numpy_iterator())
    # sorted lengths 5 12 17 30 | 33 50 64 70 | 90 100 150 190, in blocks of 16 rounded up to a power of two:
    # 2 blocks, 5 -> 8 blocks, and 12 -> 16 blocks, more than the window's 200 frames
    assert [b[0].shape[1] for b in batches] == [32, 128, 200]
    order = np.argsort(lengths, kind="stable")
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), targets[order])
    bucketed = np.concatenate([np.asarray(model(b[0])) for b in batches])
    np.testing.assert_allclose(bucketed, np.asarray(model(x))[order], atol=1e-5)
    assert model.evaluate(length_bucketed(x, targets, 4, 16), verbose=0) == pytest.approx(
        model.evaluate(x, targets, batch_size=4, verbose=0), abs=1e-5)


def test_the_noise_bank_adds_synthetic_winds_drawn_from_the_seed(tmp_path):
    from conftest import write_wav

    from core.features import FeatureConfig
    from core.training import noise_bank

    def run_args(seed=7, synthetic=0, corner_hz=(50.0, 2000.0)):
        return argparse.Namespace(data_dir=tmp_path, seed=seed, synthetic_wind=synthetic,
                                  synthetic_wind_corner=corner_hz)
    write_wav(tmp_path / "Noise" / "wind" / "gust.wav", np.full(16000, 0.1, np.float32))
    real, = noise_bank(argparse.Namespace(data_dir=tmp_path, seed=7), FeatureConfig())   # a recipe without the flag
    bank = noise_bank(run_args(synthetic=3), FeatureConfig())
    assert len(bank) == 4 and np.allclose(bank[0], real) and all(len(w) == 20 * 16000 for w in bank[1:])
    np.testing.assert_array_equal(bank[1], noise_bank(run_args(synthetic=1), FeatureConfig())[1])
    other = noise_bank(run_args(seed=8, synthetic=1), FeatureConfig())[1]
    assert not np.allclose(bank[1], other)

    def share_above_1khz(wind):
        power = np.abs(np.fft.rfft(wind)) ** 2
        return power[np.fft.rfftfreq(len(wind), 1 / 16000) > 1000].sum() / power.sum()
    rumble, hiss = (noise_bank(run_args(synthetic=1, corner_hz=corner_hz), FeatureConfig())[1]
                    for corner_hz in ((50, 60), (5000, 6000)))
    assert share_above_1khz(rumble) < 0.05 < 0.5 < share_above_1khz(hiss)
