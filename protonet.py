"""The Transformer/ProtoNet variant's custom Keras layers and its two losses.

Layers are registered (package ``animal_sounds``) and have ``get_config``, so a
saved model reloads with ``keras.saving.load_model(path, safe_mode=True)``
once this module is imported; :class:`backends.KerasPredictor` imports it just
before loading, so only the Keras path pays for it (it imports Keras, hence
TensorFlow). Everything is plain tensor algebra (matmul, reductions, softmax):
no random ops, so the inference graph exports to ONNX and TFLite.

- :class:`PositionEmbedding`  learned absolute position embedding added to patch tokens
- :class:`MaskedMeanPooling`   mean over the tokens of real sound (padding excluded)
- :class:`PrototypeHead`       class prototypes as non-trainable weights -> softmax(-squared distance)
- :func:`nt_xent_loss`         SimCLR's normalised-temperature cross-entropy
- :func:`prototypical_loss`    ProtoNet's episode loss (and :func:`class_prototypes`, :func:`squared_distances`)
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "animal_sounds"


@keras.saving.register_keras_serializable(package=PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Add a learned (length, dim) position embedding to tokens (batch, length, dim)."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = int(length)

    def build(self, input_shape):
        self.embedding = self.add_weight(name="embedding", shape=(self.length, int(input_shape[-1])),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, x):
        return x + ops.expand_dims(ops.cast(self.embedding, x.dtype), 0)

    def get_config(self):
        return {**super().get_config(), "length": self.length}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of ``tokens`` (B, T, D) over the tokens whose ``patches`` (B, T, P) hold any sound.

    Clips are zero-padded to the 500-frame window (a median clip fills ~80
    frames), so a plain mean would be mostly padding. A patch that is all zeros
    is padding (or fully masked by SpecAugment) and is left out; a clip with no
    sound at all falls back to the plain mean.
    """

    def call(self, inputs):
        tokens, patches = inputs
        mask = ops.cast(ops.max(ops.abs(patches), axis=-1) > 0, tokens.dtype)       # (B, T)
        count = ops.sum(mask, axis=1, keepdims=True)                               # (B, 1)
        mask = ops.where(count > 0, mask, ops.ones_like(mask))
        count = ops.sum(mask, axis=1, keepdims=True)
        return ops.sum(tokens * ops.expand_dims(mask, -1), axis=1) / count

    def compute_output_shape(self, input_shapes):
        tokens_shape = input_shapes[0]
        return (tokens_shape[0], tokens_shape[-1])


def squared_distances(a, b):
    """Pairwise squared Euclidean distances (n, m) between rows of ``a`` (n, d) and ``b`` (m, d)."""
    a2 = ops.sum(ops.square(a), axis=-1, keepdims=True)               # (n, 1)
    b2 = ops.expand_dims(ops.sum(ops.square(b), axis=-1), 0)          # (1, m)
    return ops.maximum(a2 - 2.0 * ops.matmul(a, ops.transpose(b)) + b2, 0.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PrototypeHead(keras.layers.Layer):
    """Nearest-prototype classifier: embeddings (B, D) -> softmax(-||e - p_c||^2) over classes (B, C).

    The prototypes (C, D), one mean embedding per class, are non-trainable
    weights set with :meth:`set_prototypes` and saved with the model.
    """

    def __init__(self, n_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)

    def build(self, input_shape):
        self.prototypes = self.add_weight(name="prototypes", shape=(self.n_classes, int(input_shape[-1])),
                                          initializer="zeros", trainable=False)

    def set_prototypes(self, prototypes) -> None:
        self.prototypes.assign(ops.cast(ops.convert_to_tensor(prototypes), self.prototypes.dtype))

    def call(self, x):
        return ops.softmax(-squared_distances(x, ops.cast(self.prototypes, x.dtype)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_classes)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


# ---------------------------------------------------------------- losses (training only)

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
