"""Training-only losses: SimCLR's NT-Xent and ProtoNet's episode loss (the transformer variant), focal loss (VGG),
LogitNorm cross-entropy (``enhance.py --logit-norm``).

Nothing here is saved with a model (models are saved without their
optimizer and loss), so these can change without breaking trained models;
the layers that are saved live in :mod:`core.layers`. The focal loss is a
registered ``keras.losses.Loss`` all the same, so a model compiled with it
can be saved and reloaded whole.
"""
from __future__ import annotations

import keras
from keras import ops

from .layers import PACKAGE, squared_distances

PROB_EPSILON = 1e-7   # probabilities are clipped to [eps, 1 - eps] before a log, as Keras' own losses do


def nt_xent_loss(z1, z2, temperature: float = 0.1):
    """SimCLR's NT-Xent loss for two views ``z1``, ``z2`` (B, D) of the same B clips.

    Rows are L2-normalised; each of the 2B views must pick out its partner among
    the other 2B-1 views by cosine similarity / ``temperature`` (softmax
    cross-entropy); the loss is the mean over all 2B views.
    """
    z = ops.concatenate([z1, z2], axis=0)
    z = z / ops.sqrt(ops.maximum(ops.sum(ops.square(z), axis=-1, keepdims=True), 1e-12))
    n = ops.shape(z)[0]
    b = n // 2
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    logits = logits - 1e9 * ops.eye(n, dtype=logits.dtype)                # a view is not its own partner
    partner = ops.concatenate([ops.arange(b) + b, ops.arange(b)], axis=0)
    losses = keras.losses.sparse_categorical_crossentropy(partner, logits, from_logits=True)
    return ops.mean(losses)


def class_prototypes(embeddings, labels, n_classes: int):
    """Mean embedding (n_classes, D) of each class; ``labels`` are ints in [0, n_classes)."""
    onehot = ops.one_hot(ops.cast(labels, "int32"), n_classes, dtype=embeddings.dtype)   # (N, C)
    sums = ops.matmul(ops.transpose(onehot), embeddings)
    counts = ops.maximum(ops.sum(onehot, axis=0), 1.0)
    return sums / ops.expand_dims(counts, -1)


def prototypical_loss(support, support_labels, query, query_labels, n_classes: int):
    """ProtoNet episode loss: softmax over -squared distances of each query to the support class means.

    Returns ``(loss, accuracy)``: mean cross-entropy of the queries' true
    classes, and the share of queries whose nearest prototype is the true one.
    """
    logits = -squared_distances(query, class_prototypes(support, support_labels, n_classes))
    labels = ops.cast(query_labels, "int32")
    loss = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    accuracy = ops.mean(ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32"))
    return loss, accuracy


@keras.saving.register_keras_serializable(package=PACKAGE)
class BinaryFocalLoss(keras.losses.Loss):
    """Focal loss on independent (sigmoid) class probabilities (Lin et al., ICCV 2017), without class weighting.

    For a target ``t`` in [0, 1] and a predicted probability ``p`` of one class::

        FL = -t (1 - p)^gamma log p - (1 - t) p^gamma log(1 - p)

    averaged over the classes (the last axis), like binary cross-entropy,
    which it equals at ``gamma`` = 0. With ``gamma`` = 2 a class already
    predicted right (``p`` = 0.9 for a present one) costs 100 times less
    than under cross-entropy, so the many easy "absent" entries of a
    multi-label target stop drowning the few hard ones. Takes probabilities,
    as the models output them.
    """

    def __init__(self, gamma: float = 2.0, name: str = "binary_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        p = ops.clip(y_pred, PROB_EPSILON, 1.0 - PROB_EPSILON)
        t = ops.cast(y_true, p.dtype)
        present = -t * ops.power(1.0 - p, self.gamma) * ops.log(p)
        absent = -(1.0 - t) * ops.power(p, self.gamma) * ops.log(1.0 - p)
        return ops.mean(present + absent, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


class LogitNormLoss(keras.losses.Loss):
    """Cross-entropy on logits scaled to length 1/``tau`` (LogitNorm; Wei et al., ICML 2022).

    Plain cross-entropy keeps rewarding a correct clip for longer logits, so
    a network grows them on the easy clips of its training classes and is then
    confident on anything; with the logits' length fixed in the loss, only
    their direction is trained. Takes probabilities, as the models output
    them: softmax(z) is unchanged by adding a constant to z, so the logits are
    recovered as the centred log-probabilities, z - mean(z), and it is their
    length that is fixed (the Dense layer's bias cannot move it). Probabilities
    are floored at 1e-30 before the log, which only matters for logit gaps
    above 69. ``label_smoothing`` as in ``CategoricalCrossentropy``. Only the
    loss changes: the model, and its logits at inference, are as before.
    """

    def __init__(self, tau: float = 0.04, label_smoothing: float = 0.0, name: str = "logit_norm", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tau, self.label_smoothing = float(tau), float(label_smoothing)

    def call(self, y_true, y_pred):
        log_p = ops.log(ops.maximum(y_pred, 1e-30))
        z = log_p - ops.mean(log_p, axis=-1, keepdims=True)
        z = z / (self.tau * (ops.sqrt(ops.sum(ops.square(z), axis=-1, keepdims=True)) + 1e-7))
        t = ops.cast(y_true, z.dtype)
        t = t * (1.0 - self.label_smoothing) + self.label_smoothing / ops.cast(ops.shape(t)[-1], z.dtype)
        return -ops.sum(t * ops.log_softmax(z, axis=-1), axis=-1)

    def get_config(self):
        return {**super().get_config(), "tau": self.tau, "label_smoothing": self.label_smoothing}
