"""AlexNet-Mel: an AlexNet-shaped 2D CNN on the log-Mel image (128 mels x 500 frames x 1).

    python train_alexnet.py [--width 0.25 --dense 512 --epochs 30]

The model takes (500, 128) features like every variant and turns them into a
(128, 500, 1) image inside the graph (Permute + Reshape), so predict.py feeds
it unchanged. The layout is AlexNet's, adapted to one channel and a small
dataset:

    conv 11x11 stride 4 -> BN -> maxpool 3/2      (AlexNet's LRN is BatchNorm here)
    conv 5x5           -> BN -> maxpool 3/2
    conv 3x3 -> conv 3x3 -> conv 3x3 -> maxpool 3/2
    flatten -> dense -> dropout .5 -> dense -> dropout .5 -> dense softmax

Widths are AlexNet's 96-256-384-384-256 times ``--width`` (default 1/4:
24-64-96-96-64) and the two hidden dense layers have ``--dense`` units (AlexNet:
4096). Full widths with 4096-unit dense layers would be 65 M parameters on this
input and took ~140 s per epoch on 2 shared CPU cores; the default is 1.9 M
parameters at ~9 s per epoch there (4-15 s as the load varied; a full 30-epoch
run took 4.5 min). The stride-4 first layer shrinks the image 16-fold for
everything after it.

Recipe: the baseline's (Adam, early stopping and LR halving on validation
loss, no augmentation, no class weights) with the learning rate lowered to
5e-4 for the deeper network, so the comparison isolates the architecture.
"""
import common

ALEXNET_WIDTHS = (96, 256, 384, 384, 256)
ALEXNET_KERNELS = (11, 5, 3, 3, 3)


def build_model(input_shape, n_classes, width: float = 0.25, dense: int = 512, dropout: float = 0.5):
    import keras
    from keras import layers
    frames, mels = input_shape
    inputs = keras.Input(shape=input_shape, name="log_mel")
    x = layers.Permute((2, 1), name="mels_first")(inputs)                  # (mels, frames)
    x = layers.Reshape((mels, frames, 1), name="mel_image")(x)             # (128, 500, 1)
    widths = [max(8, int(round(w * width))) for w in ALEXNET_WIDTHS]
    for i, (filters, k) in enumerate(zip(widths, ALEXNET_KERNELS), start=1):
        x = layers.Conv2D(filters, k, strides=4 if i == 1 else 1, padding="same", activation="relu",
                          name=f"conv{i}")(x)
        if i <= 2:
            x = layers.BatchNormalization(name=f"norm{i}")(x)
        if i in (1, 2, 5):
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    x = layers.Flatten()(x)
    for i in (6, 7):
        x = layers.Dense(dense, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="alexnet_mel")


def train(data, args, staging):
    model = build_model(data.train.x.shape[1:], len(data.classes), args.width, args.dense)
    return model, common.fit_classifier(model, data, args)


def make_parser():
    parser = common.make_parser("alexnet", __doc__.splitlines()[0], epochs=30, lr=5e-4)
    parser.add_argument("--width", type=float, default=0.25, help="multiplier on AlexNet's conv widths")
    parser.add_argument("--dense", type=int, default=512, help="units of the two hidden dense layers")
    return parser


if __name__ == "__main__":
    common.run_experiment("alexnet", make_parser().parse_args(), train)
