"""Baseline: the seed project's 1D-CNN over log-Mel frames, trained on clean clips.

    python baseline.py [--epochs 30 --batch-size 32 --seed 42]

The reference point every other variant is compared with: no augmentation,
no class weights, a Flatten->Dense head that overfits a dataset this small.
"""
import common


def build_model(input_shape, n_classes):
    """Conv1D(32,3) BN MaxPool Dropout(.3) Conv1D(64,3) BN MaxPool Dropout(.3) Flatten Dense(128) Dropout(.4)."""
    import keras
    from keras import layers
    inputs = keras.Input(shape=input_shape, name="log_mel")
    x = inputs
    for filters in (32, 64):
        x = layers.Conv1D(filters, 3, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling1D(2)(x)
        x = layers.Dropout(0.3)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="baseline")


def train(data, args, staging):
    model = build_model(data.train.x.shape[1:], len(data.classes))
    return model, common.fit_classifier(model, data, args)


if __name__ == "__main__":
    args = common.make_parser("baseline", __doc__.splitlines()[0]).parse_args()
    common.run_experiment("baseline", args, train)
