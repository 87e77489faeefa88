"""Enhanced: the toolkit's best recipe, and its main job.

    python enhance.py [--epochs 80 --batch-size 32 --seed 42]

The baseline's convolutions, grown into a residual 1D-CNN over a PCEN Mel map
(per-channel energy normalisation instead of dB: ahead on validation, and
steadier under wind; --scaling db for the dB map), whose head pools over the
clip's real frames only (the Flatten->Dense head memorises 700 clips, and a
plain global average is mostly padding for a 2.5 s call in a 16 s window).
It trains on freshly augmented 4 s excerpts: circular time shift, wind mixed
into three clips of four at a calibrated SNR down to -5 dB (measured on the
call itself; real recordings and 16 synthetic winds of random colour, which
outlier exposure also shows alone as "no animal"), a random spectral tilt,
class-balanced sampling and label smoothing, with a warm-up + cosine learning
rate and early stopping on validation. Outlier exposure also shows it every
animal clip played an octave down and up (--shifted-negatives 0.5 2) as "no
animal": near misses that held-out animals resemble, drawn in each epoch's
share, so an epoch keeps its length.
SpecAugment is available but off: on 4 s excerpts its masks hid too much of
each call and the network underfitted. Each ingredient has a flag;
bench/ablate_enhance.py measures what each one buys. The step is compiled
with XLA (--xla), which halves a run on a CPU.
"""
import argparse

import common

WIDTHS = (64, 128, 192, 256)   # one residual block each, each halving the time axis


def conv_block(x, mask, filters: int, dropout: float):
    """Two Conv1D-BN-ReLU layers with a projected residual, then halve the time axis (padding stays zero)."""
    from keras import layers

    from core.layers import MaskedMaxPooling1D
    shortcut = layers.Conv1D(filters, 1, use_bias=False)(x)
    for kernel in (5, 3):
        x = layers.Conv1D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Multiply()([layers.Activation("relu")(x), mask])   # padding stays silent for the next conv
    x = layers.Add()([x, layers.BatchNormalization()(shortcut)])
    x, mask = MaskedMaxPooling1D()([x, mask])
    return layers.SpatialDropout1D(dropout)(x), mask


def build_model(n_frames, n_mels, n_classes, widths=WIDTHS, dropout=0.3):
    """Residual 1D-CNN over log-Mel frames, pooled (mean and max) over the real frames only.

    ``n_frames=None`` accepts any length: training runs on short excerpts,
    and the saved model takes the full window.
    """
    import keras
    from keras import layers

    from core.layers import FrameMask, MaskedMeanMaxPooling
    inputs = keras.Input(shape=(n_frames, n_mels), name="log_mel")
    x, mask = inputs, FrameMask()(inputs)
    for filters in widths:
        x, mask = conv_block(x, mask, filters, dropout / 3)
    x = layers.Dropout(dropout)(MaskedMeanMaxPooling()([x, mask]))
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="enhance")


def feature_config(args):
    """The log-Mel parameters of a run: the defaults, with the map's ``--scaling``."""
    return common.FeatureConfig(scaling=args.scaling)


def training_batches(data, args):
    """The freshly augmented, class-balanced training batches of ``data``, redrawn every epoch."""
    cfg = feature_config(args)
    bank = common.noise_bank(args, cfg) if args.p_noise > 0 else []
    augmenter = common.WaveAugment(bank, cfg,
                                   p_noise=args.p_noise, snr_db=(args.snr_min, args.snr_max),
                                   tilt=args.tilt, max_shift=args.max_shift, crop_frames=args.crop_frames or None)

    def features(idx, rng):
        return augmenter.features([data.train.audio[i] for i in idx], rng)

    def batch_transform(x, y, rng):
        if args.time_mask or args.freq_mask:
            x = common.spec_augment(x, rng, max_time=args.time_mask, max_freq=args.freq_mask)
        if args.mixup > 0:
            x, y = common.mixup(x, y, rng, args.mixup)
        return x, y

    return common.make_batches(features, data.train, len(data.classes), args.batch_size, args.seed, batch_transform,
                               balance=args.balance, full_batches=True, workers=2)   # README: training time


def train(data, args, staging):
    from core.losses import LogitNormLoss
    cfg = feature_config(args)
    n = len(data.classes)
    batches = training_batches(data, args)
    model = build_model(None, cfg.n_mels, n, widths=args.widths, dropout=args.dropout)
    # the head pools real frames only, so validation runs on them alone (README: where an epoch goes)
    validation = common.length_bucketed(data.val.x, common.one_hot(data.val.y, n), args.batch_size,
                                        2 ** len(args.widths))
    history = common.fit_classifier(model, data, args, batches, use_class_weights=args.class_weights,
                                    label_smoothing=args.label_smoothing, lr_schedule=args.lr_schedule,
                                    validation=validation,
                                    validate_from=int(args.epochs * args.validate_from),
                                    loss=(LogitNormLoss(args.logit_norm, args.label_smoothing)
                                          if args.logit_norm else None))
    # fixed input, as exported
    saved = build_model(cfg.n_frames, cfg.n_mels, n, widths=args.widths, dropout=args.dropout)
    saved.set_weights(model.get_weights())
    return saved, history


def make_parser():
    p = common.make_parser("enhance", __doc__.splitlines()[0], epochs=80, patience=20, lr=2e-3, xla=True,
                           shifted_negatives=(0.5, 2.0))
    p.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS),
                   help="filters of each residual block; each block halves the time axis")
    p.add_argument("--p-noise", type=float, default=0.75, help="probability of mixing wind into a clip")
    p.add_argument("--synthetic-wind", type=int, default=16,
                   help="add this many 20 s synthetic wind recordings, each of a random colour, to Noise/wind's "
                        "(and to the negatives of outlier exposure)")
    p.add_argument("--synthetic-wind-corner", type=float, nargs=2, default=[50.0, 8000.0],
                   metavar=("LOW", "HIGH"),
                   help="range (Hz) of the synthetic winds' low-pass corners, drawn log-uniform")
    p.add_argument("--scaling", choices=common.SCALINGS, default="pcen",
                   help="the map of the mel power: PCEN (per-channel energy normalisation, which turns steady "
                        "background such as wind down band by band), or dB as the other variants")
    p.add_argument("--snr-min", type=float, default=-5.0, help="calibrated SNR range (dB, on the active part)")
    p.add_argument("--snr-max", type=float, default=25.0)
    p.add_argument("--tilt", type=float, default=0.5,
                   help="random spectral tilt y[n] - a*y[n-1], |a| up to this (microphone colour; 0: off)")
    p.add_argument("--max-shift", type=float, default=0.5, help="circular time shift, fraction of the clip")
    p.add_argument("--crop-frames", type=int, default=128,
                   help="train on random excerpts of this many frames (0: whole 500-frame windows)")
    p.add_argument("--time-mask", type=int, default=0,
                   help="SpecAugment: two time masks of up to this many frames (0: none)")
    p.add_argument("--freq-mask", type=int, default=0,
                   help="SpecAugment: two Mel-band masks of up to this many bins (0: none)")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 disables)")
    p.add_argument("--balance", type=float, default=0.5,
                   help="class-balanced sampling: draw clips with probability ~ class count ** -BALANCE (0: off)")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=False,
                   help="weight the loss by inverse class frequency (an alternative to --balance)")
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--logit-norm", type=float, default=0.0, metavar="TAU",
                   help="train with LogitNorm cross-entropy, the logits scaled to length 1/TAU in the loss "
                        "(e.g. 0.04; 0: plain cross-entropy)")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="cosine")
    p.add_argument("--validate-from", type=float, default=0.375, metavar="FRACTION",
                   help="with the cosine schedule, validate only after this fraction of the epochs (its early "
                        "weights are never the best: in the 36 runs at hand the best epoch was 38 of 80 or later); "
                        "the plateau schedule validates every epoch")
    return p


def run(args) -> dict:
    """Train, calibrate and publish an enhance model for ``args``; returns its Test metrics."""
    return common.run_experiment("enhance", args, train, with_audio=True, front_end=common.LogMel(feature_config(args)))


if __name__ == "__main__":
    run(make_parser().parse_args())
