"""Training-only losses: SimCLR's NT-Xent and ProtoNet's episode loss (the transformer variant).

Nothing here is saved with a model, so these can change without breaking
trained models; the layers that are saved live in :mod:`core.layers`.
"""
from __future__ import annotations

import keras
from keras import ops

from .layers import squared_distances


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
