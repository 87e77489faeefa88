"""LSTM-attention: a bidirectional LSTM over MFCCs, pooled by additive attention over the clip's real frames.

    python train_lstm_attention.py [--units 64 --attention-units 64 --epochs 40]

train_rnn.py's network with --cell lstm, whose mean-and-max pooling is
replaced by additive attention (core.layers.MaskedAttentionPooling): each
frame's BiLSTM output is scored by q . tanh(W h_t + b), the scores become
weights by a softmax over the real frames only (padding gets exactly 0),
and the clip is the weighted sum. The weights say which frames the decision
rests on: core.model_views.attention_weights(model, x) returns them, one
per input frame (this network never shortens the time axis).

Same recipe and flags as train_rnn.py (MFCC with deltas and delta-deltas by
default, excerpts of --crop-frames frames, class-balanced sampling). The
model goes to model/lstm_attention.
"""
import common
import train_rnn


def make_parser():
    p = common.make_parser("lstm_attention", __doc__.splitlines()[0], epochs=40, lr=2e-3, patience=8)
    train_rnn.add_recurrent_flags(p, units=64, crop_frames=128)
    p.add_argument("--attention-units", type=int, default=64, help="size of the attention's scoring layer")
    return p


def main(argv=None) -> dict:
    args = make_parser().parse_args(argv)
    return train_rnn.run("lstm_attention", args, "lstm", args.attention_units)


if __name__ == "__main__":
    main()
