"""VGG: the seed's fully-convolutional VGG on the log-Mel image, trained on segments; single- or multi-label.

    python train_vgg.py [--loss ce --width-scale 0.5 --epochs 30 --seed 42]
    python train_vgg.py --multi-label --loss focal [--mix-pairs 1.0 --mix-level-db 10]

The network is the seed project's: the (frames, mels) log-Mel window as a
one-channel image, six blocks of 3x3 conv + BatchNorm + ReLU + 2x2 max
pooling at 16, 32, 64, 128, 256, 512 channels, then a 2x2 conv to 1024
channels (+ BatchNorm + ReLU) and a 1x1 conv to the classes. Without a
dense layer it is fully convolutional: the six poolings shrink the 128 mels
to 2 and the 2x2 conv to 1, and the time axis to one output per *segment*
of 128 frames (4.1 s) every 64 frames, for an input of any length of at
least 65 frames (ceil(frames / 64) - 1 segments).

Segments. Training shows the network single segments, each with its clip's
label (the strong-label assumption): every epoch, one segment of each clip,
drawn among its real ones on the clip's 64-frame grid. The saved model
takes the whole (500, 128) window, as every variant's does, and pools its
7 segment outputs itself: the mean over the segments holding any real frame
(core.layers.SegmentPooling), so padding after a short call dilutes
nothing. The 1x1 conv is linear, so the mean of the segments' logits is the
1x1 conv of the mean of their embeddings: it runs as the model's Dense head
on the pooled embedding, the head that calibration and open-set scores read.

Width. --width-scale multiplies every channel count. The full network (1.0:
3.7 M parameters) took 0.96 s per 32-segment training step on 2 shared CPU
cores, about 21 s per single-label epoch of 692 clips and twice that with
mixtures; the default 0.5 (0.93 M parameters) takes 0.49 s (README: measured runs).

Losses and labels. --loss ce: a softmax head, one class per clip. bce, focal
(binary focal loss, gamma 2: core.losses.BinaryFocalLoss): a sigmoid head,
an independent probability per class; uniform-design negatives get an
all-zero target. --multi-label (bce or focal) also trains on mixtures and
makes the model name every class above its own threshold: per class, the
probability cut with the best F1 on validation (clips and mixtures),
stored in config.json "thresholds".

Mixtures. With --multi-label each epoch adds --mix-pairs x (training animal
clips) fresh mixtures (default 1.0: as many as clips), each shown as one
segment: two clips of different classes added from their first sample, the
second at a level difference drawn uniformly within +-mix-level-db of the
first (active power, measured as the wind mixing does), then featurised. A
segment's targets are the classes whose clip still sounds in it.
Validation (with --multi-label) adds one mixture per validation animal clip,
and the Test report one per Test clip, both drawn from --seed.

Epochs. At most 30, or 16 with --multi-label, whose epochs add one mixture
per animal clip (1.7 times the segments on the bench's split): 16 of them
are about the steps of 30 single-label ones (592 against 660) and keep the
run under 10 minutes on 2 CPU cores (README: measured runs; with 30 the
same model, best at epoch 16, took 12.7 minutes).
Early stopping counts its patience from epoch 5 on: validation loss first
rises for 3-5 epochs, and without the warm-up a sigmoid head could stop
before learning anything (README: measured runs).

metrics.json gains mAP and mean_auc (macro average precision and ROC AUC
over classes) on the Test clips and Test mixtures together, mixtures_mAP and
mixtures_mean_auc on the mixtures alone, and for a multi-label model
labels_micro_f1, the micro F1 of its thresholded label sets on both.
Calibration and rejection for a sigmoid head: see core.rejection.
"""
import math

import numpy as np

import common
from core.multilabel import (
    best_f1_thresholds,
    label_sets_micro_f1,
    mean_average_precision,
    mean_roc_auc,
    mixture_set,
    one_mixture,
)
from core.negatives import BACKGROUND

VGG_WIDTHS = (16, 32, 64, 128, 256, 512)
TOP_WIDTH = 1024
SEGMENT_HOP = 2 ** len(VGG_WIDTHS)   # 64 frames: one output step after six 2x2 poolings
SEGMENT_FRAMES = 2 * SEGMENT_HOP     # 128 frames: the 2x2 conv spans two steps
LOSSES = {"ce": "softmax", "bce": "sigmoid", "focal": "sigmoid"}   # loss -> the head's activation
FOCAL_GAMMA = 2.0
DEFAULT_MIX_PAIRS = 1.0
EPOCHS = 30
MULTI_LABEL_EPOCHS = 16   # its epochs hold 1.7x the segments: about the steps of 30, under 10 minutes
WARMUP_EPOCHS = 5   # early stopping's patience counts from here (module docstring)


# ---------------------------------------------------------------- the network

def scaled(width: int, width_scale: float) -> int:
    """A channel count times ``width_scale``, at least 4."""
    return max(4, round(width * width_scale))


def conv_bn_relu(x, filters: int, kernel: int, padding: str, name: str):
    from keras import layers
    x = layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    return layers.ReLU(name=f"{name}_relu")(layers.BatchNormalization(name=f"{name}_bn")(x))


def build_model(n_frames, n_mels: int, n_classes: int, width_scale: float = 0.5, activation: str = "softmax",
                dropout: float = 0.3):
    """The fully-convolutional VGG, pooled over real segments; ``n_frames=None`` takes any length (>= 65 frames).

    Raises ValueError for a number of mels the six poolings and the 2x2 conv
    do not bring to one (65 to 128).
    """
    import keras
    from keras import layers

    from core.layers import SegmentPooling
    if math.ceil(n_mels / SEGMENT_HOP) != 2:
        raise ValueError(f"{n_mels} mels: the network needs {SEGMENT_HOP + 1} to {SEGMENT_FRAMES}")
    inputs = keras.Input((n_frames, n_mels), name="log_mel")
    x = layers.Reshape((-1, n_mels, 1), name="mel_image")(inputs)   # frames x mels, one channel
    for i, width in enumerate(VGG_WIDTHS, start=1):
        x = conv_bn_relu(x, scaled(width, width_scale), 3, "same", f"block{i}")
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    top = scaled(TOP_WIDTH, width_scale)
    x = conv_bn_relu(x, top, 2, "valid", "segment")                        # (B, segments, 1, top)
    x = layers.Reshape((-1, top), name="segment_embeddings")(x)
    x = SegmentPooling(SEGMENT_HOP, name="segment_pooling")([x, inputs])
    x = layers.Dropout(dropout)(x)
    # the 1x1 conv to the classes, after the (linear, so equivalent) mean over segments
    outputs = layers.Dense(n_classes, activation=activation, name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"vgg_{activation}")


def make_loss(name: str):
    """The Keras loss of ``--loss``: categorical or binary cross-entropy, or binary focal loss (gamma 2)."""
    import keras

    from core.losses import BinaryFocalLoss
    if name == "ce":
        return keras.losses.CategoricalCrossentropy()
    if name == "bce":
        return keras.losses.BinaryCrossentropy()
    return BinaryFocalLoss(gamma=FOCAL_GAMMA)


# ---------------------------------------------------------------- segments

def segment_count(n_frames: int) -> int:
    """The segments (outputs) of a window of ``n_frames`` frames: ceil(n_frames / 64) - 1."""
    return math.ceil(n_frames / SEGMENT_HOP) - 1


def real_segments(n_real: int, n_frames: int) -> int:
    """The segments of a window that hold any of its first ``n_real`` frames (its sound): those starting before it."""
    return min(math.ceil(n_real / SEGMENT_HOP), segment_count(n_frames))


def cut_segment(x: np.ndarray, index: int) -> np.ndarray:
    """Segment ``index`` of features (frames, mels): frames [64 index, 64 index + 128), zero past the window's end."""
    out = np.zeros((SEGMENT_FRAMES, x.shape[1]), x.dtype)
    part = x[index * SEGMENT_HOP:index * SEGMENT_HOP + SEGMENT_FRAMES]
    out[:len(part)] = part
    return out


def segment_targets(extents, rows, index: int) -> np.ndarray:
    """The target of segment ``index``: the maximum of the target ``rows`` of the sources still sounding in it.

    Source ``k`` sounds in the first ``extents[k]`` frames of the window (its
    clip starts the window, as a mixture's clips both do).
    """
    return np.max([row for n, row in zip(extents, rows) if index * SEGMENT_HOP < n], axis=0)


# ---------------------------------------------------------------- targets and mixtures

def clip_targets(y: np.ndarray, n_classes: int, activation: str) -> np.ndarray:
    """(len(y), n_classes) targets of single clips: one-hot rows; label ``n_classes`` (a uniform-design negative)
    gets the uniform row for a softmax head and the all-zero row (no animal) for a sigmoid one."""
    if activation == "softmax":
        return common.one_hot(y, n_classes)
    return np.vstack([np.eye(n_classes, dtype=np.float32), np.zeros((1, n_classes), np.float32)])[y]


def animal_indices(y: np.ndarray, classes: list[str]) -> np.ndarray:
    """Indices of the clips whose label is an animal (not a negative, not the background class)."""
    return np.flatnonzero(np.isin(y, [i for i, c in enumerate(classes) if c != BACKGROUND]))


def validation_set(data, args) -> tuple[np.ndarray, np.ndarray]:
    """The validation features and targets: the clips, and with --multi-label one mixture per animal clip."""
    n = len(data.classes)
    x, targets = data.val.x, clip_targets(data.val.y, n, LOSSES[args.loss])
    if not args.multi_label:
        return x, targets
    animals = animal_indices(data.val.y, data.classes)
    mix_x, mix_targets = mixture_set([data.val.audio[i] for i in animals], data.val.y[animals], data.val.x[animals],
                                     len(animals), n, args.mix_level_db, common.FeatureConfig(),
                                     np.random.default_rng([args.seed, 1]))
    return np.concatenate([x, mix_x]), np.concatenate([targets, mix_targets])


# ---------------------------------------------------------------- training

def segment_batches(clips, targets: np.ndarray, mixer, n_mixtures: int, batch_size: int, seed: int):
    """A Keras ``PyDataset`` of segments, redrawn every epoch.

    An epoch holds one random real segment of each of the training ``clips``
    (rows of ``targets``; shifted negatives take turns among the negatives,
    :func:`core.negatives.epoch_draw`) and of ``n_mixtures`` fresh mixtures
    (``mixer(rng)`` returns one as features, extents, target rows), shuffled.
    """
    import keras
    x = clips.x
    extents = [common.n_real_frames(clip) for clip in x]

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = common.epoch_draw(clips, self.rng, n_mixtures)

        def __len__(self):
            return math.ceil(len(self.order) / batch_size)   # every epoch's draw is as long

        def __getitem__(self, i):
            segments, segment_rows = zip(*(self.example(k) for k in self.order[i * batch_size:(i + 1) * batch_size]))
            return np.stack(segments), np.stack(segment_rows)

        def example(self, k: int) -> tuple[np.ndarray, np.ndarray]:
            features, spans, rows = (x[k], [extents[k]], [targets[k]]) if k < len(x) else mixer(self.rng)
            index = int(self.rng.integers(real_segments(max(spans), len(features))))
            return cut_segment(features, index), segment_targets(spans, rows, index)

        def on_epoch_end(self):
            self.order = common.epoch_draw(clips, self.rng, n_mixtures)

    return Batches()


def train(data, args, staging):
    cfg = common.FeatureConfig()
    n = len(data.classes)
    activation = LOSSES[args.loss]
    mixer, n_mixtures = None, 0
    if args.multi_label:
        animals = animal_indices(data.train.y, data.classes)
        audio, labels = [data.train.audio[i] for i in animals], data.train.y[animals]
        extents = np.array([common.n_real_frames(data.train.x[i]) for i in animals])
        n_mixtures = round(args.mix_pairs * len(animals))

        def mixer(rng):
            return one_mixture(audio, labels, extents, n, args.mix_level_db, cfg, rng)

    batches = segment_batches(data.train, clip_targets(data.train.y, n, activation), mixer, n_mixtures,
                              args.batch_size, args.seed)
    model = build_model(None, cfg.n_mels, n, args.width_scale, activation, args.dropout)
    history = common.fit_classifier(model, data, args, batches, loss=make_loss(args.loss),
                                    validation=validation_set(data, args), warmup_epochs=WARMUP_EPOCHS)
    saved = build_model(cfg.n_frames, cfg.n_mels, n, args.width_scale, activation, args.dropout)   # as exported
    saved.set_weights(model.get_weights())
    return saved, history


# ---------------------------------------------------------------- the report

def multi_label_report(model, open_set, data, args) -> tuple[dict, dict]:
    """Config and metrics entries: mAP and ROC AUC on Test clips and mixtures; thresholds with --multi-label."""
    from core.model_views import logits_and_embedding
    view = logits_and_embedding(model)

    def probabilities(x):
        return open_set.probabilities(np.asarray(view.predict(x, batch_size=32, verbose=0)[0]))

    cfg, n = common.FeatureConfig(), len(data.classes)
    test_audio = [common.load_audio(f, cfg.sr, cfg.window_seconds) for f in data.test.files]
    mix_x, mix_targets = mixture_set(test_audio, data.test.y, data.test.x, len(data.test.y), n, args.mix_level_db,
                                     cfg, np.random.default_rng([args.seed, 2]))
    mix_probs = probabilities(mix_x)
    targets = np.concatenate([np.eye(n)[data.test.y], mix_targets])
    probs = np.concatenate([probabilities(data.test.x), mix_probs])
    metrics = {"mAP": mean_average_precision(targets, probs), "mean_auc": mean_roc_auc(targets, probs),
               "mixtures_mAP": mean_average_precision(mix_targets, mix_probs),
               "mixtures_mean_auc": mean_roc_auc(mix_targets, mix_probs), "n_test_mixtures": len(mix_x)}
    if not args.multi_label:
        return {}, metrics
    val_x, val_targets = validation_set(data, args)
    thresholds = best_f1_thresholds(val_targets, probabilities(val_x))
    metrics["labels_micro_f1"] = label_sets_micro_f1(targets, probs >= thresholds)
    return {"multi_label": True, "thresholds": dict(zip(data.classes, thresholds.tolist()))}, metrics


def make_parser():
    p = common.make_parser("vgg", __doc__.splitlines()[0], epochs=None, patience=8)   # set in parse_args
    p.add_argument("--width-scale", type=float, default=0.5,
                   help="multiplier on every channel count (1.0: the seed's 16-512 and 1024, 3.7 M parameters; "
                        "the default halves them to train in minutes on 2 CPU cores)")
    p.add_argument("--loss", choices=list(LOSSES), default="ce",
                   help="ce: softmax head, categorical cross-entropy; bce, focal: sigmoid head, binary "
                        f"cross-entropy or focal loss (gamma {FOCAL_GAMMA:g})")
    p.add_argument("--multi-label", action="store_true",
                   help="train on two-clip mixtures too and name every class above its validation threshold "
                        f"(needs --loss bce or focal); --epochs defaults to {MULTI_LABEL_EPOCHS} with it, "
                        f"{EPOCHS} without")
    p.add_argument("--mix-pairs", type=float,
                   help=f"with --multi-label: fresh mixtures per epoch, per training clip (default {DEFAULT_MIX_PAIRS:g})")
    p.add_argument("--mix-level-db", type=float, default=10.0,
                   help="a mixture's second clip is within this many dB of the first (uniform, either way)")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout on the pooled embedding")
    return p


def parse_args(argv=None):
    p = make_parser()
    args = p.parse_args(argv)
    if args.multi_label and LOSSES[args.loss] != "sigmoid":
        p.error("--multi-label needs a sigmoid head: --loss bce or --loss focal")
    if args.mix_pairs is not None and not args.multi_label:
        p.error("--mix-pairs applies to --multi-label")
    if args.mix_pairs is not None and args.mix_pairs < 0:
        p.error("--mix-pairs must be at least 0")
    if args.width_scale <= 0:
        p.error("--width-scale must be positive")
    if "epochs" not in args:
        args.epochs = MULTI_LABEL_EPOCHS if args.multi_label else EPOCHS
    if args.mix_pairs is None:
        args.mix_pairs = DEFAULT_MIX_PAIRS if args.multi_label else 0.0
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    return common.run_experiment("vgg", args, train, with_audio=args.multi_label, extra_report=multi_label_report)


if __name__ == "__main__":
    main()
