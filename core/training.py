"""The training harness every model variant shares.

A variant script is a recipe: it builds a parser with :func:`make_parser`,
defines its network and how to fit it, and hands both to :func:`run_experiment`,
which loads data, seeds everything, trains, evaluates on Test once, and writes
the artifacts atomically.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .allocator import keep_freed_memory
from .audio import WIND_CORNERS_HZ, load_noise_bank, synthetic_wind
from .calibration import (
    activate,
    binary_negative_log_likelihood,
    ece_if_calibrated,
    expected_calibration_error,
    negative_log_likelihood,
    plot_reliability,
)
from .compile_cache import use_compile_cache
from .dataset import (
    DATASET_URL,
    DEFAULT_CACHE,
    Clips,
    DatasetError,
    DataSplits,
    class_weights,
    download_archive,
    import_dataset,
    load_splits,
)
from .features import FeatureConfig, n_real_frames
from .front_ends import LogMel
from .negatives import (
    BACKGROUND,
    CLIP_SECONDS,
    DEFAULT_OUTLIERS,
    OUTLIER_DESIGNS,
    Negatives,
    add_negatives,
    collect_negatives,
    draws_per_epoch,
    epoch_draw,
)
from .openset import accuracy_after_rejection, auroc
from .rejection import DEFAULT_KEEP, DEFAULT_SCORE, DEPLOYABLE_SCORES, SCORE_PREFERENCE, OpenSet
from .reports import append_result, evaluate, result_row, swap_in_dir, write_charts, write_model_artifacts

if TYPE_CHECKING:   # pandas is imported where it is used (core.reports says why)
    import pandas as pd

STEPS_PER_EXECUTION = 8   # XLA-compiled steps run per call from Python (fit_classifier)


def positive_seconds(text: str) -> float:
    """An argparse type: a duration in seconds, above zero."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: a duration must be above 0 seconds")
    return value


def make_parser(variant: str, description: str, epochs: int | None = 30, batch_size: int = 32,
                lr: float = 1e-3, patience: int = 8, outliers: str = DEFAULT_OUTLIERS,
                xla: bool = False, shifted_negatives: tuple[float, ...] = ()) -> argparse.ArgumentParser:
    """The flags every training script takes; a script adds its own before parsing.

    ``epochs=None``: the default depends on other flags, and the parsed
    arguments lack ``epochs`` unless it was given; the script sets it.
    """
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("Animals_Sounds"),
                   help="dataset root with Training/<class>/ and Test/<class>/")
    p.add_argument("--model-dir", type=Path, default=Path("model") / variant,
                   help="where the trained model and its reports go")
    p.add_argument("--epochs", type=int, default=argparse.SUPPRESS if epochs is None else epochs,
                   help="maximum training epochs")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr, help="initial learning rate")
    p.add_argument("--patience", type=int, default=patience,
                   help="early stopping: epochs without validation improvement")
    p.add_argument("--val-size", type=float, default=0.15, help="share of Training held out for validation")
    p.add_argument("--seed", type=int, default=42, help="fixes the validation split, initialisation, augmentation")
    p.add_argument("--charts-dir", type=Path, default=Path("charts"))
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="feature cache")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=xla,
                   help="compile the training step with XLA on a CPU too (Keras does on a GPU anyway); "
                        "the same network and recipe, faster where measured (README: training time)")
    p.add_argument("--outliers", choices=OUTLIER_DESIGNS, default=outliers,
                   help="outlier exposure: train on non-animal sounds (Noise/, synthetic) with a uniform target, "
                        "or as a reserved background output never reported as an animal")
    p.add_argument("--negative-seconds", type=positive_seconds, nargs=2, default=CLIP_SECONDS, metavar=("MIN", "MAX"),
                   help="length of the negative clips: Noise/ recordings are cut, and the synthetic bank drawn, "
                        "this long")
    p.add_argument("--shifted-negatives", type=float, nargs="+", default=list(shifted_negatives), metavar="SPEED",
                   help="also train on the animal clips played this many times as fast (2: an octave up, "
                        "0.5: an octave down) as negatives, each in its source clip's split")
    p.add_argument("--no-shifted-negatives", dest="shifted_negatives", action="store_const", const=[],
                   default=argparse.SUPPRESS, help="no animal clips played at other speeds among the negatives")
    p.add_argument("--ood-score", choices=("auto", *DEPLOYABLE_SCORES), default="auto",
                   help="the open-set score that decides 'unknown'; auto: the one that best tells the validation "
                        "negatives from the animals (see README: knowing what it does not know)")
    p.add_argument("--keep", type=float, default=DEFAULT_KEEP,
                   help="rejection threshold: the share of validation clips (known classes) it keeps")
    p.add_argument("--reject-threshold", type=float,
                   help="a fixed rejection threshold on the --ood-score instead of the --keep rule")
    p.add_argument("--folds", type=int, default=1,
                   help="K > 1: group-aware stratified K-fold cross-validation over Training and Test together, "
                        "mean ± std over folds (see README: cross-validation); 1: the Training/Test split")
    return p


def ensure_dataset(data_dir: Path) -> None:
    """Import the public dataset when ``data_dir``/Training is empty (download with a progress bar)."""
    train = data_dir / "Training"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        return
    print(f"{train} is empty: importing the public Animal Sound Dataset from {DATASET_URL}")
    summary = import_dataset(download_archive(), data_dir)
    print(f"imported {summary['clips']} clips ({summary['skipped']} unreadable, "
          f"{summary['duplicate_groups']} duplicate groups)")


def prepare_data(args, with_audio: bool = False, front_end=None) -> DataSplits:
    """Load the splits for ``args`` (importing the public dataset first if none is there), with negatives.

    Clips are decoded at ``front_end.cfg``'s rate and window (log-Mel by
    default) and carry that front end's features: a backbone front end
    embeds them after loading, negatives included.
    """
    ensure_dataset(args.data_dir)
    front_end = front_end or LogMel()
    data = load_splits(args.data_dir, front_end.cfg, args.seed, args.val_size,
                       keeps_audio(args, with_audio, front_end), args.cache_dir)
    return finish_splits(data, args, front_end, collect_outliers(args, front_end))


def keeps_audio(args, with_audio: bool, front_end) -> bool:
    """Whether a run keeps its clips' audio: the recipe trains on it, its front end embeds it, or
    ``--shifted-negatives`` plays it at other speeds."""
    return with_audio or front_end.needs_audio or bool(args.shifted_negatives)


def collect_outliers(args, front_end) -> Negatives | None:
    """The negatives ``args.outliers`` trains on (None for ``none``), decoded at ``front_end.cfg``'s rate.

    A recipe that mixes synthetic wind under its calls (``args.synthetic_wind``,
    with ``args.p_noise`` > 0) gets the same winds as negatives.
    """
    if args.outliers == "none":
        return None
    mixes_wind = getattr(args, "p_noise", 0) > 0
    return collect_negatives(args.data_dir, front_end.cfg, args.seed,
                             synthetic_winds=synthetic_winds(args, front_end.cfg) if mixes_wind else [],
                             clip_seconds=tuple(getattr(args, "negative_seconds", CLIP_SECONDS)))


def finish_splits(data: DataSplits, args, front_end, negatives: Negatives | None) -> DataSplits:
    """``data`` as a run consumes it: ``negatives`` added to training and validation, every part featurised."""
    print(f"data: {len(data.train.y)} train, {len(data.val.y)} validation, {len(data.test.y)} test clips, "
          f"{len(data.classes)} classes" + (f", {data.skipped} unreadable skipped" if data.skipped else ""))
    if negatives is not None:
        shifted = tuple(args.shifted_negatives)
        data = add_negatives(data, negatives, front_end.cfg, args.outliers, args.seed, args.val_size, shifted)
        print(f"outlier exposure ({args.outliers}): {len(negatives.audio)} negative clips "
              f"({', '.join(sorted(set(negatives.kinds)))}) added to training and validation"
              + (f", and every animal clip played at speed {', '.join(f'{f:g}' for f in shifted)}" if shifted else ""))
    return dataclasses.replace(data, **{part: front_end.featurize(getattr(data, part), args.cache_dir)
                                        for part in ("train", "val", "test")})


def noise_bank(args, cfg: FeatureConfig) -> list:
    """Wind recordings of ``args.data_dir``/Noise/wind (synthetic wind with a warning if none), then the run's
    :func:`synthetic_winds`."""
    return load_noise_bank(args.data_dir / "Noise" / "wind", cfg.sr) + list(synthetic_winds(args, cfg))


def synthetic_winds(args, cfg: FeatureConfig) -> tuple:
    """``args.synthetic_wind`` (0 if the recipe has no such flag) 20 s recordings of :func:`synthetic_wind`, each of
    its own random colour (low-pass corner log-uniform in ``args.synthetic_wind_corner``), drawn from ``args.seed``.

    Read-only arrays, drawn once per process for the same settings: the wind
    mixing and outlier exposure both ask for them (16 winds take 0.7 s).
    """
    corner_hz = tuple(getattr(args, "synthetic_wind_corner", WIND_CORNERS_HZ))
    return _synthetic_winds(getattr(args, "synthetic_wind", 0), cfg.sr, args.seed, corner_hz)


@functools.lru_cache(maxsize=1)
def _synthetic_winds(count: int, sr: int, seed: int, corner_hz: tuple) -> tuple:
    rng = np.random.default_rng(seed)
    winds = tuple(synthetic_wind(20 * sr, sr, rng, corner_hz) for _ in range(count))
    for wind in winds:
        wind.setflags(write=False)
    return winds


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    """Training targets (len(y), n): one-hot rows, and the uniform distribution for label ``n``.

    Label ``n`` (one past the last output) marks a negative of the ``uniform``
    outlier design (:mod:`core.negatives`): the model should be unsure on it.
    """
    return np.vstack([np.eye(n, dtype=np.float32), np.full((1, n), 1.0 / n, np.float32)])[y]


def make_batches(x_fn, clips: Clips, n_classes: int, batch_size: int, seed: int, after=None,
                 balance: float = 0.0, full_batches: bool = False, workers: int = 1):
    """A Keras ``PyDataset`` of freshly augmented batches of the training ``clips``, redrawn every epoch.

    ``x_fn(indices, rng)`` returns the features of those training examples;
    ``after(x, y, rng)`` may transform a whole batch (SpecAugment, mixup).
    An epoch has :func:`core.negatives.draws_per_epoch` examples: every clip
    but the shifted negatives, which are drawn in the negatives' share.
    ``balance`` = 0 takes them from a fresh shuffle of the training set each
    epoch (:func:`core.negatives.epoch_draw`); above 0 they are drawn with
    replacement, each with probability proportional to its class count **
    -balance (1: every class equally often, 0.5: rare classes up-weighted by
    the square root of their rarity).
    ``full_batches`` fills the last batch too (drawing more examples, or
    without ``balance`` repeating the epoch's first ones), so that every
    batch has one shape: an XLA-compiled step is then compiled once, not
    twice. ``workers`` > 1 prepares that many batches at once in threads,
    working one epoch ahead; ``close()`` stops them once training is done.
    Each epoch's order and each batch's augmentation come from generators
    seeded by (``seed``, epoch[, batch]), so the batches are the same
    whatever the threads' timing.
    """
    import keras
    y, epoch_size = clips.y, draws_per_epoch(clips)
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = counts[y] ** -balance
    weights /= weights.sum()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers)
            self.epoch = 0
            self.requested = set()   # this epoch's batch indices asked for so far
            # Keras' workers compute the batches asked for, and stop at each epoch's end; these threads work ahead
            # on the next epoch once Keras has asked for all of this one's, through validation and the epoch's end
            # (README: training time)
            self.ahead = ThreadPoolExecutor(workers) if workers > 1 else None
            self.prefetched = {}     # (epoch, batch index) -> Future
            self.lock = threading.Lock()

        def order(self, epoch):
            rng = np.random.default_rng([seed, epoch])
            size = len(self) * batch_size if full_batches else epoch_size
            if balance:
                return rng.choice(len(y), size, p=weights)
            return np.resize(epoch_draw(clips, rng), size)   # filled up from the start of the shuffle

        def batch(self, epoch, i, order):
            rng = np.random.default_rng([seed, epoch, i])
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x_fn(idx, rng), one_hot(y[idx], n_classes)
            return after(xb, yb, rng) if after else (xb, yb)

        def __len__(self):
            return int(np.ceil(epoch_size / batch_size))

        def __getitem__(self, i):
            with self.lock:
                self.requested.add(i)
                if self.ahead is not None and len(self.requested) == len(self) and \
                        (self.epoch + 1, 0) not in self.prefetched:
                    order = self.order(self.epoch + 1)
                    self.prefetched.update({(self.epoch + 1, j): self.ahead.submit(self.batch, self.epoch + 1, j, order)
                                            for j in range(len(self))})
                ready = self.prefetched.get((self.epoch, i))
            if ready is not None and not ready.cancel():   # started or done: wait for it
                return ready.result()
            return self.batch(self.epoch, i, self.order(self.epoch))

        def on_epoch_end(self):
            with self.lock:
                for i in range(len(self)):
                    self.prefetched.pop((self.epoch, i), None)
                self.epoch += 1
                self.requested = set()

        def close(self):
            """Stop the threads that work ahead (batches prefetched for an epoch that will not run are dropped)."""
            if self.ahead is not None:
                self.ahead.shutdown(wait=True, cancel_futures=True)
                self.prefetched.clear()

    return Batches()


def length_bucketed(x: np.ndarray, targets: np.ndarray, batch_size: int, multiple: int):
    """``(x, targets)`` as validation data for a model that ignores padding, at a fraction of the cost.

    Batches hold clips of similar length (sorted by real frames), each cut
    after its longest clip's real frames, rounded up to ``multiple`` (the
    model's total time pooling, so every pooling grid stays where it was)
    times a power of two: a few lengths, so that an XLA-compiled model is
    compiled for a few shapes, not one per batch (about 0.5 s each).
    For a model whose padding frames stay zero and are left out of its
    pooling (``enhance.py``'s), the outputs and the loss are those of the
    padded windows, while most validation clips are far shorter than the
    window. A ``tf.data.Dataset`` for ``fit(validation_data=...)``.
    """
    import tensorflow as tf
    lengths = np.array([n_real_frames(clip) for clip in x])
    order = np.argsort(lengths, kind="stable")
    batches = []
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        blocks = -(-lengths[rows].max() // multiple)
        frames = min(x.shape[1], multiple * 2 ** int(np.ceil(np.log2(max(blocks, 1)))))
        batches.append((x[rows, :frames], targets[rows].astype(np.float32)))
    spec = (tf.TensorSpec((None, None, x.shape[2]), tf.float32), tf.TensorSpec((None, targets.shape[1]), tf.float32))
    dataset = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))   # Keras then knows where it ends


def fit_classifier(model, data: DataSplits, args, train_batches=None,
                   use_class_weights: bool = False, label_smoothing: float = 0.0,
                   lr_schedule: str = "plateau", loss=None, validation=None, warmup_epochs: int = 0,
                   validate_from: int = 0) -> pd.DataFrame:
    """Compile and fit ``model`` with early stopping on validation loss; returns the history.

    The weights of the best epoch (lowest validation loss) are kept in memory
    and restored at the end. ``train_batches`` replaces the plain (x, y) training
    data with on-the-fly augmented batches; plain data with shifted negatives
    is drawn by :func:`make_batches` too, so that they fill the negatives'
    share of an epoch rather than lengthen it. ``loss`` replaces categorical
    cross-entropy (with ``label_smoothing``), and ``validation`` (x, targets,
    or any ``validation_data``: :func:`length_bucketed`) the validation split
    with one-hot targets. Early stopping counts its patience from epoch
    ``warmup_epochs`` on, for a recipe whose validation loss first rises
    while training settles. The first ``validate_from`` epochs run without
    validation, for a schedule whose early weights are never the best: they
    are neither kept nor watched, and their validation columns are NaN. The
    plateau schedule, which steps on every epoch's validation, ignores it.
    """
    import keras
    n = len(data.classes)
    if train_batches is None and draws_per_epoch(data.train) < len(data.train.y):
        # the shifted copies take turns among the negatives, as in make_batches: an epoch keeps its length
        train_batches = make_batches(lambda idx, rng: data.train.x[idx], data.train, n, args.batch_size, args.seed)
    epoch_steps = len(train_batches) if train_batches is not None else int(np.ceil(len(data.train.y) / args.batch_size))
    # cosine: two epochs of linear warm-up (BatchNorm statistics settle), then a cosine decay to zero
    lr = (keras.optimizers.schedules.CosineDecay(0.0, epoch_steps * max(1, args.epochs - 2), warmup_target=args.lr,
                                                 warmup_steps=epoch_steps * min(2, args.epochs))
          if lr_schedule == "cosine" else args.lr)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=loss or keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"], jit_compile=True if args.xla else "auto",
                  # the same steps, in a loop TensorFlow runs: less dispatch from Python per step
                  steps_per_execution=STEPS_PER_EXECUTION if args.xla else 1)
    best = {"val_loss": np.inf, "weights": None}
    # the last epoch is always validated
    validate_from = 0 if lr_schedule == "plateau" else min(validate_from, args.epochs - 1)

    class ValidatedEarlyStopping(keras.callbacks.EarlyStopping):
        """Watches validated epochs only (Keras' own warns at every epoch without its metric)."""
        def on_epoch_end(self, epoch, logs=None):
            if self.monitor in (logs or {}):
                super().on_epoch_end(epoch, logs)

    def keep_best(epoch, logs):   # in memory: a file written at every new best took 1-2 s of a run
        if logs.get("val_loss", np.inf) < best["val_loss"]:
            best.update(val_loss=logs["val_loss"], weights=model.get_weights())
    callbacks = [ValidatedEarlyStopping(monitor="val_loss", patience=args.patience, start_from_epoch=warmup_epochs),
                 keras.callbacks.LambdaCallback(on_epoch_end=keep_best)]
    if lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                           patience=max(2, args.patience // 3)))
    train = train_batches if train_batches is not None else data.train.x
    target = None if train_batches is not None else one_hot(data.train.y, n)
    if validation is None:
        validation = (data.val.x, one_hot(data.val.y, n))
    try:
        history = model.fit(train, target, batch_size=None if train_batches is not None else args.batch_size,
                            epochs=args.epochs, validation_data=validation,
                            # Keras validates at the (1-based) epochs of a list
                            validation_freq=list(range(validate_from + 1, args.epochs + 1)) if validate_from else 1,
                            class_weight=class_weights(data.train.y, n) if use_class_weights else None,
                            callbacks=callbacks, shuffle=True, verbose=0 if args.quiet else 2)
    finally:
        if hasattr(train, "close"):   # make_batches' threads
            train.close()
    import pandas as pd
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    epochs = len(history.epoch)   # columns of unvalidated epochs are short: NaN in front
    frame = pd.DataFrame({k: [np.nan] * (epochs - len(v)) + list(v) for k, v in history.history.items()})
    return frame.drop(columns=[c for c in frame if c == "learning_rate"])


def fit_open_set(model, data: DataSplits, args, refit=None) -> tuple[OpenSet, dict]:
    """Calibrate ``model`` and fit its rejection rule on Training and validation; measure both on Test.

    ``refit(model, data, args)``, if given, runs once the validation clips
    have served (calibration, thresholds, the score's choice) and before
    Test is read; it may refit ``model``'s last layer only, so that the
    embedding, and what was fitted on it, stay valid.

    Returns the fitted :class:`OpenSet` and a dict with the Test clips'
    calibrated and uncalibrated probabilities, the validation metrics, and the
    metrics that go into ``metrics.json``: ECE (15 bins) and NLL before and
    after temperature scaling, and what rejection costs on Test (accuracy
    counting rejected clips as errors, and the share rejected). For a sigmoid
    head (:func:`core.model_views.head_activation`) the NLLs are binary, over
    every class, against one-hot targets; ECE is always the top class's.
    """
    from .model_views import head_activation, logits_and_embedding
    activation = head_activation(model)
    view = logits_and_embedding(model)
    # statistics of the animals only: negatives (and a background output) are what "unknown" is measured against
    animals = len([c for c in data.classes if c != BACKGROUND])
    train_known, val_known = data.train.y < animals, data.val.y < animals
    (_, train_emb), (val_logits, val_emb) = ([np.asarray(a) for a in view.predict(x, batch_size=64, verbose=0)]
                                             for x in (data.train.x[train_known], data.val.x))
    open_set = OpenSet.fit(train_emb, data.train.y[train_known], val_logits[val_known],
                           val_emb[val_known], data.val.y[val_known], animals,
                           DEFAULT_SCORE if args.ood_score == "auto" else args.ood_score, args.keep, activation)
    val_ood_auroc = None
    if not val_known.all():   # validation negatives: how well each score tells them from the animals
        val_scores = open_set.all_scores(val_logits, val_emb)
        val_ood_auroc = {name: auroc(s[val_known], s[~val_known]) for name, s in val_scores.items()}
        if args.ood_score == "auto":   # max() keeps the first of equals, so ties go to the preferred score
            open_set.score = max(SCORE_PREFERENCE, key=val_ood_auroc.get)
    if args.reject_threshold is not None:
        open_set.thresholds[open_set.score] = args.reject_threshold
    if refit is not None:
        refit(model, data, args)
    test_logits, test_emb = (np.asarray(a) for a in view.predict(data.test.x, batch_size=64, verbose=0))
    uncalibrated, probs = activate(test_logits, activation), open_set.probabilities(test_logits)
    test_scores = open_set.ood_score(test_logits, test_emb)
    accuracy, rejected = accuracy_after_rejection(probs.argmax(1), data.test.y, test_scores,
                                                  open_set.thresholds[open_set.score])
    val_metrics, _, _ = evaluate(open_set.probabilities(val_logits[val_known]), data.val.y[val_known], data.classes)
    val_metrics["ood_auroc"] = val_ood_auroc
    y = data.test.y
    nll = (negative_log_likelihood if activation == "softmax" else
           lambda p, labels: binary_negative_log_likelihood(p, np.eye(p.shape[1])[labels]))
    metrics = {"ece": expected_calibration_error(probs, y),
               "ece_uncalibrated": expected_calibration_error(uncalibrated, y),
               "ece_if_calibrated": ece_if_calibrated(probs),
               "nll": nll(probs, y), "nll_uncalibrated": nll(uncalibrated, y),
               "temperature": open_set.temperature, "ood_score": open_set.score,
               "reject_threshold": open_set.thresholds[open_set.score],
               "accuracy_after_rejection": accuracy, "test_rejected": rejected}
    return open_set, {"probs": probs, "uncalibrated": uncalibrated, "val_metrics": val_metrics, "metrics": metrics}


@contextlib.contextmanager
def staged_dir(model_dir: Path):
    """Yield a fresh staging directory beside ``model_dir``, swapped in for it when the block completes.

    If the block raises or is interrupted, the staging directory is removed
    and ``model_dir`` is left as it was.
    """
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}.partial-"))
    try:
        yield staging
        swap_in_dir(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train_and_report(variant: str, args, train_fn, data: DataSplits, front_end, out: Path,
                     extra_report=None, refit=None) -> tuple[dict, pd.DataFrame]:
    """Fit ``train_fn`` on ``data``, calibrate, evaluate on ``data.test`` once, and write a model directory into ``out``.

    Returns (the metrics written to ``metrics.json``, the training history).
    See :func:`run_experiment` for ``train_fn``, ``extra_report`` and ``refit``.
    """
    import keras
    start = time.time()
    model, history = train_fn(data, args, out)
    train_seconds = time.time() - start
    open_set, calibration = fit_open_set(model, data, args, refit)
    metrics, report, cm = evaluate(calibration["probs"], data.test.y, data.classes)
    metrics.update(calibration["metrics"], train_seconds=round(train_seconds, 1),
                   val_accuracy=calibration["val_metrics"]["accuracy"],
                   val_macro_f1=calibration["val_metrics"]["macro_f1"],
                   val_ood_auroc=calibration["val_metrics"]["ood_auroc"], n_train=len(data.train.y),
                   n_val=len(data.val.y), epochs_run=len(history), parameters=int(model.count_params()))
    config = {"variant": variant, **front_end.config(), "classes": data.classes, "network": model.name,
              "input_shape": list(front_end.input_shape), "seed": args.seed,
              "data_manifest_hash": data.manifest_hash, "data_dir": str(args.data_dir.resolve()),
              "open_set": open_set.config(),
              "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "keras_version": keras.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if extra_report is not None:
        extra_config, extra_metrics = extra_report(model, open_set, data, args)
        config.update(extra_config)
        metrics.update(extra_metrics)
    write_model_artifacts(out, model, config, metrics, report, cm, history)
    open_set.save_arrays(out)
    plot_reliability(calibration["uncalibrated"], calibration["probs"], data.test.y, out / "reliability.png")
    return metrics, history


def publish_result(variant: str, args, metrics: dict, epochs_run: int) -> None:
    """Append a finished run to the results.csv beside ``args.model_dir`` and redraw the comparison charts."""
    results_csv = args.model_dir.parent / "results.csv"
    append_result(results_csv, result_row(variant, args.seed, metrics, epochs_run, args.model_dir))
    write_charts(results_csv, args.charts_dir)


def run_experiment(variant: str, args, train_fn, with_audio: bool = False, front_end=None,
                   extra_report=None, refit=None) -> dict:
    """Run one training recipe end to end and publish its artifacts; returns the test metrics.

    ``train_fn(data, args, staging)`` builds and fits a model and returns
    ``(model, history)``; the model maps a batch of ``front_end`` features
    (log-Mel (frames, mels) by default, see :mod:`core.front_ends`) to class
    probabilities, and ``config.json`` names that front end.
    ``extra_report(model, open_set, data, args)``, if given, runs after
    calibration and returns ``(config entries, metrics entries)`` the recipe
    adds (train_vgg.py: multi-label thresholds, mAP). ``refit(model, data,
    args)``, if given, refits the last layer once validation has served
    (:func:`fit_open_set`; transfer.py: on Training and validation). Everything is
    written into a staging directory beside ``args.model_dir`` and swapped in
    only once complete, so a failed or interrupted run leaves the previous
    model untouched. With ``args.folds`` other than 1 the recipe is
    cross-validated instead (:func:`core.folds.run_folds`), which returns
    the summary over folds.
    """
    keep_freed_memory()
    use_compile_cache(args.cache_dir)   # before TensorFlow compiles anything
    if args.folds != 1:
        from .folds import run_folds  # core.folds builds on this module
        return run_folds(variant, args, train_fn, with_audio, front_end, extra_report, refit)
    import keras
    keras.utils.set_random_seed(args.seed)
    try:
        front_end = front_end or LogMel()
        data = prepare_data(args, with_audio, front_end)
    except DatasetError as e:
        sys.exit(f"error: {e}")
    with staged_dir(args.model_dir) as staging:
        metrics, history = train_and_report(variant, args, train_fn, data, front_end, staging, extra_report, refit)
    publish_result(variant, args, metrics, len(history))
    print(f"\n{variant}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"weighted-F1 {metrics['weighted_f1']:.3f} on {metrics['n_test']} clips; "
          f"trained {metrics['train_seconds']:.0f} s; artifacts in {args.model_dir}")
    print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n_test", "train_seconds")}))
    return metrics
