"""Enhanced: the toolkit's best recipe, and its main job.

    python enhance.py [--epochs 60 --batch-size 32 --seed 42]

The baseline's convolutions, grown into a residual 1D-CNN with a global
pooling head (the Flatten->Dense head memorises 700 clips), trained on
freshly augmented batches: wind mixed in at a calibrated SNR (measured on the
call itself, clean copies kept), gain jitter, time shift, SpecAugment, class
weights and label smoothing, with early stopping on validation. Mixup is
available (--mixup ALPHA) but off: it has not been measured yet. Each
ingredient has a flag so that an ablation can measure what it buys.
"""
import argparse

import common


def conv_block(x, filters: int, dropout: float):
    """Two Conv1D-BN-ReLU layers with a projected residual, then halve the time axis."""
    from keras import layers
    shortcut = layers.Conv1D(filters, 1, use_bias=False)(x)
    for kernel in (5, 3):
        x = layers.Conv1D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.Add()([x, layers.BatchNormalization()(shortcut)])
    x = layers.MaxPooling1D(2)(x)
    return layers.SpatialDropout1D(dropout)(x)


def build_model(input_shape, n_classes, widths=(64, 128, 192, 256), dropout=0.5):
    """Residual 1D-CNN over log-Mel frames with a mean+max global pooling head."""
    import keras
    from keras import layers
    inputs = keras.Input(shape=input_shape, name="log_mel")
    x = inputs
    for filters in widths:
        x = conv_block(x, filters, dropout / 3)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="enhance")


def train(data, args, staging):
    cfg = common.FeatureConfig()
    n = len(data.classes)
    augmenter = common.WaveAugment(common.noise_bank(args, cfg) if args.p_noise > 0 else [], cfg,
                                   p_noise=args.p_noise, snr_db=(args.snr_min, args.snr_max),
                                   max_shift=args.max_shift)

    def features(idx, rng):
        return augmenter.features([data.train.audio[i] for i in idx], rng)

    def batch_transform(x, y, rng):
        if args.specaugment:
            x = common.spec_augment(x, rng)
        if args.mixup > 0:
            x, y = common.mixup(x, y, rng, args.mixup)
        return x, y

    batches = common.make_batches(features, data.train.y, n, args.batch_size, args.seed, batch_transform)
    model = build_model(data.train.x.shape[1:], n, dropout=args.dropout)
    history = common.fit_classifier(model, data, args, staging, batches, use_class_weights=args.class_weights,
                                    label_smoothing=args.label_smoothing, lr_schedule=args.lr_schedule)
    return model, history


def make_parser():
    p = common.make_parser("enhance", __doc__.splitlines()[0], epochs=60, patience=15, lr=1e-3)
    p.add_argument("--p-noise", type=float, default=0.5, help="probability of mixing wind into a clip")
    p.add_argument("--snr-min", type=float, default=5.0, help="calibrated SNR range (dB, on the active part)")
    p.add_argument("--snr-max", type=float, default=25.0)
    p.add_argument("--max-shift", type=float, default=0.2, help="time shift, fraction of the clip")
    p.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 disables)")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau")
    return p


if __name__ == "__main__":
    common.run_experiment("enhance", make_parser().parse_args(), train, with_audio=True)
