"""The custom Keras layers that saved models use: padding masks, masked pooling, the prototype head.

Every clip is zero-padded after its sound to the model's 500-frame window
(16 s), and the median clip fills only ~80 frames of it, so a plain global
average is mostly padding and shifts with the clip's length. The masked
layers pool over real frames only. A frame (or a Transformer patch) is
padding when all its values are exactly zero, which after per-clip
z-normalisation only padding (or a SpecAugment time mask) is.

Layers are registered under the package ``animal_sounds`` with their class
names, and saved models refer to them by that registered name
(``animal_sounds>FrameMask``, ...): renaming a class or the package would
break every model trained before, so ``tests/test_layers.py`` pins them.
Importing this module registers them; :class:`core.backends.KerasPredictor`
does so just before loading, so only the Keras path pays for it (it imports
Keras, hence TensorFlow). Everything is plain tensor algebra (no random ops),
so a model using them exports to ONNX and TFLite.

- :class:`FrameMask`, :class:`MaskedMaxPooling1D`, :class:`MaskedMeanMaxPooling`  (enhance)
- :class:`PositionEmbedding`, :class:`MaskedMeanPooling`, :class:`PrototypeHead`    (transformer)
- :class:`MaskedAttentionPooling`                                                (lstm_attention)
- :class:`SegmentPooling`                                                        (vgg)
- :class:`BlockUnitNormalization`                                                (transfer)
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

PACKAGE = "animal_sounds"

# Added to padding before a max, so that a real frame always wins over it.
_PADDING_PENALTY = 1e4


def nonzero_mask(x, keepdims: bool):
    """1.0 where any value along the last axis of ``x`` is non-zero (sound), 0.0 where all are (padding)."""
    return ops.cast(ops.max(ops.abs(x), axis=-1, keepdims=keepdims) > 0, x.dtype)


def masked_mean(x, mask):
    """Mean of ``x`` (B, T, D) over the steps where ``mask`` (B, T, 1) is 1; zeros where there are none."""
    count = ops.sum(mask, axis=1)
    return ops.sum(x * mask, axis=1) / ops.maximum(count, 1.0)


STANDARDISATION_EPSILON = 1e-10


def frozen_standardisation(inputs, real_frames, name: str = "standardise"):
    """``inputs`` standardised with the mean and variance of ``real_frames`` (m, F), frozen: a BatchNormalization.

    A frozen BatchNormalization exports everywhere (Normalization's adapted
    statistics become extra inputs of the ONNX graph). Padding frames stop
    being zero: masks must come from the raw input. Its epsilon is
    :data:`STANDARDISATION_EPSILON`, not Keras' 1e-3, which would swamp
    features of small variance (a unit-length 1 024-d vector's values vary by
    ~1e-4) and scale them by far less than their spread. A constant feature
    is left unscaled, as scikit-learn's StandardScaler leaves it.
    """
    layer = keras.layers.BatchNormalization(trainable=False, epsilon=STANDARDISATION_EPSILON, name=name)
    x = layer(inputs)
    dim = real_frames.shape[-1]
    variance = real_frames.var(axis=0)
    layer.set_weights([np.ones(dim), np.zeros(dim), real_frames.mean(axis=0), np.where(variance > 0, variance, 1.0)])
    return x


def hide_padding(x, mask):
    """``x`` with padding steps pushed far below any real activation, for a max over real steps only."""
    return x + (mask - 1.0) * _PADDING_PENALTY


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameMask(keras.layers.Layer):
    """(B, T, F) features -> (B, T, 1) float mask: 1 where any band is non-zero."""

    def call(self, x):
        return nonzero_mask(x, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMaxPooling1D(keras.layers.Layer):
    """Halve the time axis of ``(x, mask)``: max over the real frames of each pair.

    A pair holding one real frame and one padding frame keeps the real one
    (a plain max pool would compare it with the padding's activations);
    a pair of padding frames becomes a zero padding frame again.
    """

    def call(self, inputs):
        x, mask = inputs
        pooled_mask = ops.max_pool(mask, 2, 2, padding="same")
        return ops.max_pool(hide_padding(x, mask), 2, 2, padding="same") * pooled_mask, pooled_mask


class TimePooling(keras.layers.Layer):
    """A layer that pools the time axis away, so a Keras mask on its input (a recurrent layer's) ends there.

    Its own mask input says which steps are real; Keras' implicit mask would
    otherwise raise a warning that the layer "destroys" it.
    """

    def compute_mask(self, inputs, previous_mask=None):
        return None


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanMaxPooling(TimePooling):
    """Mean and max of ``x`` (B, T, D) over the frames where ``mask`` (B, T, 1) is 1 -> (B, 2 D).

    A clip without any real frame (silence, or everything masked during
    training) pools to zeros instead of averaging padding.
    """

    def call(self, inputs):
        x, mask = inputs
        count = ops.sum(mask, axis=1)                                   # (B, 1)
        peak = ops.max(hide_padding(x, mask), axis=1) * ops.cast(count > 0, x.dtype)
        return ops.concatenate([masked_mean(x, mask), peak], axis=-1)

    def compute_output_shape(self, input_shapes):
        x_shape = input_shapes[0]
        return (x_shape[0], 2 * x_shape[-1])


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

    Unlike :class:`MaskedMeanMaxPooling`, a clip with no sound at all falls
    back to the plain mean over every token (the prototype head needs an
    embedding near the others, not the origin).
    """

    def call(self, inputs):
        tokens, patches = inputs
        mask = nonzero_mask(patches, keepdims=True)                                 # (B, T, 1)
        mask = ops.where(ops.sum(mask, axis=1, keepdims=True) > 0, mask, ops.ones_like(mask))
        return masked_mean(tokens, mask)

    def compute_output_shape(self, input_shapes):
        tokens_shape = input_shapes[0]
        return (tokens_shape[0], tokens_shape[-1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class BlockUnitNormalization(keras.layers.Layer):
    """Each of the consecutive parts ``blocks`` (sizes) of the last axis scaled to unit L2 norm.

    A backbone vector made of two layers' outputs (:class:`core.backbones.BirdNETStages`)
    has parts of different scales; normalising each lets neither dominate. A
    part that is all zero stays zero.
    """

    def __init__(self, blocks, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [int(b) for b in blocks]

    def call(self, x):
        parts = ops.split(x, np.cumsum(self.blocks)[:-1].tolist(), axis=-1) if len(self.blocks) > 1 else [x]
        return ops.concatenate([part / ops.maximum(ops.norm(part, axis=-1, keepdims=True), 1e-12)
                                for part in parts], axis=-1)

    def get_config(self):
        return {**super().get_config(), "blocks": self.blocks}


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


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedAttentionPooling(TimePooling):
    """Additive attention over time: ``(x (B, T, D), mask (B, T, 1))`` -> the attention-weighted sum of ``x`` (B, D).

    Each step scores ``q . tanh(W x_t + b)`` (Bahdanau et al.'s additive
    attention, with one learned query ``q`` of ``units`` values); the weights
    are the softmax of the scores over the steps where ``mask`` is 1, exactly
    0 on padding, so they sum to 1 over a clip's real frames. A clip without
    any real frame (a silent window) gets all-zero weights and pools to
    zeros, as in :class:`MaskedMeanMaxPooling`. :meth:`attention` gives the
    weights themselves (see :func:`core.model_views.attention_weights`).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shapes):
        dim = int(input_shapes[0][-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.query = self.add_weight(name="query", shape=(self.units, 1), initializer="glorot_uniform")

    def attention(self, x, mask):
        """(B, T) weights of the steps of ``x`` (B, T, D) under ``mask`` (B, T, 1)."""
        scores = ops.squeeze(ops.matmul(ops.tanh(ops.matmul(x, self.kernel) + self.bias), self.query), axis=-1)
        real = mask[..., 0]
        # the penalty makes exp() of a padding score exactly 0; the product zeroes a clip with no real frame
        return ops.softmax(hide_padding(scores, real), axis=-1) * real

    def call(self, inputs):
        x, mask = inputs
        return ops.sum(x * ops.expand_dims(self.attention(x, mask), -1), axis=1)

    def compute_output_shape(self, input_shapes):
        x_shape = input_shapes[0]
        return (x_shape[0], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentPooling(keras.layers.Layer):
    """Mean of segment embeddings (B, S, D) over the segments holding real frames of ``frames`` (B, T, F) -> (B, D).

    The fully-convolutional VGG (train_vgg.py) gives one embedding per
    segment of ``2 * hop`` frames every ``hop`` frames: segment ``s`` covers
    frames ``[s * hop, s * hop + 2 * hop)``, and a window of T frames has
    ``S = ceil(T / hop) - 1`` of them. A segment counts when any of its
    frames is real, so the padding after a short clip does not dilute it. A
    window with no real frame at all pools to zeros.
    """

    def __init__(self, hop: int, **kwargs):
        super().__init__(**kwargs)
        self.hop = int(hop)

    def call(self, inputs):
        segments, frames = inputs
        blocks = ops.max_pool(nonzero_mask(frames, keepdims=True), self.hop, self.hop, padding="same")  # (B, S+1, 1)
        mask = ops.maximum(blocks[:, :-1], blocks[:, 1:])   # a segment spans two consecutive blocks
        return masked_mean(segments, mask)

    def compute_output_shape(self, input_shapes):
        segments_shape = input_shapes[0]
        return (segments_shape[0], segments_shape[-1])

    def get_config(self):
        return {**super().get_config(), "hop": self.hop}


# The registered names saved models refer to; tests/test_layers.py fails if one changes.
REGISTERED_LAYERS = (FrameMask, MaskedMaxPooling1D, MaskedMeanMaxPooling, PositionEmbedding, MaskedMeanPooling,
                     PrototypeHead, MaskedAttentionPooling, SegmentPooling, BlockUnitNormalization)
