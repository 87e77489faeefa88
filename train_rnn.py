"""Recurrent networks over MFCCs: the seed's RNN / LSTM / GRU / CRNN comparison, one --cell at a time.

    python train_rnn.py --cell rnn|lstm|gru|crnn [--front-end mfcc --units 64 --epochs 40]

The seed compared recurrent cells on UrbanSound8K (accuracy: RNN 0.41,
LSTM 0.58, GRU 0.59, ConvLSTM 0.60, CNN 0.62); this script runs the same
comparison on this toolkit's data, flags, artifacts, calibration and
open-set rejection. Every cell shares one network:

    standardise each input value (the training frames' mean and variance, frozen)
    [crnn: two of enhance.py's masked residual conv blocks, each halving the time axis]
    bidirectional recurrent layer(s) of --units per direction (SimpleRNN, LSTM or GRU; crnn: GRU)
    mean and max over the clip's real frames, dropout, softmax

Padding frames are masked: they leave the recurrent state as it was and
take no part in the pooling, so 400 frames of padding after a 3 s call
change nothing. It trains on random excerpts of --crop-frames frames of
each clip's sound (most clips are shorter, and are seen whole): sequences
4x shorter than the 500-frame window, which is what the saved model takes.

The default front end is MFCC (40 coefficients, deltas and delta-deltas:
120 values per 32 ms frame; see core/front_ends.py); --front-end log_mel
feeds the 128 log-Mel bands instead. The model goes to model/rnn_<cell>.
"""
import argparse
import functools
import sys
from pathlib import Path

import numpy as np

import common
from core.features import MFCCConfig, n_real_frames, real_frames
from core.front_ends import MFCC, LogMel

CELLS = ("rnn", "lstm", "gru", "crnn")
CRNN_WIDTHS = (64, 128)   # the conv blocks of the crnn cell


def recurrent_layer(cell: str, units: int):
    """A bidirectional recurrent layer of ``cell`` returning every step (crnn's recurrence is a GRU)."""
    from keras import layers
    recurrent = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU, "crnn": layers.GRU}[cell]
    return layers.Bidirectional(recurrent(units, return_sequences=True))


def build_model(input_shape, n_classes: int, cell: str, train_frames: np.ndarray, units: int = 64, depth: int = 1,
                attention_units: int = 0, dropout: float = 0.3, input_name: str = "mfcc", name: str | None = None):
    """Standardise, [conv blocks], ``depth`` bidirectional ``cell`` layers, pool over real frames, softmax.

    ``input_shape`` is (frames, values per frame), frames None for any
    length. ``train_frames`` (n, values) are real frames of the training
    clips, whose mean and variance the frozen standardisation keeps.
    ``attention_units`` > 0 pools with additive attention
    (:class:`core.layers.MaskedAttentionPooling`) instead of mean and max.
    """
    import keras
    from keras import layers

    from core.layers import FrameMask, MaskedAttentionPooling, MaskedMeanMaxPooling, frozen_standardisation
    from enhance import conv_block
    inputs = keras.Input(input_shape, name=input_name)
    mask = FrameMask()(inputs)   # from the raw input: standardising moves padding away from zero
    x = layers.Multiply()([frozen_standardisation(inputs, train_frames), mask])   # padding back to zero
    for filters in CRNN_WIDTHS if cell == "crnn" else ():
        x, mask = conv_block(x, mask, filters, dropout / 3)
    x = layers.Masking(0.0)(x)   # all-zero steps (padding) leave the recurrent state unchanged
    for _ in range(depth):
        x = recurrent_layer(cell, units)(x)
    pooled = (MaskedAttentionPooling(attention_units, name="attention")([x, mask]) if attention_units
              else MaskedMeanMaxPooling()([x, mask]))
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(layers.Dropout(dropout)(pooled))
    return keras.Model(inputs, outputs, name=name or f"rnn_{cell}")


def excerpts(x: np.ndarray, lengths: np.ndarray, idx: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """(len(idx), frames, values): a random ``frames``-long excerpt of the real frames of each clip ``idx`` of ``x``.

    ``lengths`` are the clips' real frame counts; a clip no longer than
    ``frames`` is taken whole from its start (zero padding after it).
    """
    starts = rng.integers(0, np.maximum(lengths[idx] - frames, 0) + 1)
    return np.stack([x[i, s:s + frames] for i, s in zip(idx, starts)])


def train(data, args, staging, front_end, cell: str, attention_units: int = 0, name: str | None = None):
    """Fit the network on excerpts (any length), then return it with the front end's fixed input, as exported."""
    x = data.train.x
    network = {"input_name": front_end.input_name, "cell": cell, "units": args.units, "depth": args.layers,
             "attention_units": attention_units, "dropout": args.dropout, "name": name}
    model = build_model((None, x.shape[-1]), len(data.classes), train_frames=real_frames(x), **network)
    lengths = np.array([n_real_frames(clip) for clip in x])
    frames = args.crop_frames or x.shape[1]
    batches = common.make_batches(lambda idx, rng: excerpts(x, lengths, idx, frames, rng), data.train,
                                  len(data.classes), args.batch_size, args.seed, balance=args.balance)
    history = common.fit_classifier(model, data, args, batches, label_smoothing=args.label_smoothing)
    saved = build_model(front_end.input_shape, len(data.classes), train_frames=real_frames(x), **network)
    saved.set_weights(model.get_weights())
    return saved, history


def front_end_of_args(args):
    """The front end the flags ask for: MFCC with --n-mfcc and --delta-order, or log-Mel."""
    if args.front_end == "log_mel":
        return LogMel()
    return MFCC(MFCCConfig(n_mfcc=args.n_mfcc, delta_order=args.delta_order))


def add_recurrent_flags(p: argparse.ArgumentParser, units: int, crop_frames: int) -> None:
    """The flags of the recurrent recipe (network size, excerpts, sampling, front end)."""
    p.add_argument("--units", type=int, default=units, help="recurrent units per direction")
    p.add_argument("--layers", type=int, default=1, help="stacked bidirectional recurrent layers")
    p.add_argument("--dropout", type=float, default=0.3, help="before the softmax (crnn: a third of it in the convs)")
    p.add_argument("--crop-frames", type=int, default=crop_frames,
                   help="train on random excerpts of this many frames of each clip's sound (0: whole windows)")
    p.add_argument("--balance", type=float, default=0.5,
                   help="class-balanced sampling: draw clips with probability ~ class count ** -BALANCE (0: off)")
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--front-end", choices=("mfcc", "log_mel"), default="mfcc")
    p.add_argument("--n-mfcc", type=int, default=MFCCConfig.n_mfcc, help="MFCC coefficients per frame")
    p.add_argument("--delta-order", type=int, choices=(0, 1, 2), default=MFCCConfig.delta_order,
                   help="MFCC deltas: 0 none, 1 deltas, 2 deltas and delta-deltas")


def run(variant: str, args, cell: str, attention_units: int = 0) -> dict:
    """Train ``variant`` (cell ``cell``) through common.run_experiment; ``args.model_dir`` None means model/<variant>."""
    args.model_dir = args.model_dir or Path("model") / variant
    try:
        front_end = front_end_of_args(args)
    except ValueError as e:   # MFCC parameters out of range
        sys.exit(f"error: {e}")
    fit = functools.partial(train, front_end=front_end, cell=cell, attention_units=attention_units, name=variant)
    return common.run_experiment(variant, args, fit, front_end=front_end)


def make_parser():
    p = common.make_parser("rnn_CELL", __doc__.splitlines()[0], epochs=40, lr=2e-3, patience=8)
    p.set_defaults(model_dir=None)
    p.add_argument("--cell", choices=CELLS, default="gru", help="the recurrent cell (model dir: model/rnn_CELL)")
    add_recurrent_flags(p, units=64, crop_frames=128)
    return p


def main(argv=None) -> dict:
    args = make_parser().parse_args(argv)
    return run(f"rnn_{args.cell}", args, args.cell)


if __name__ == "__main__":
    main()
