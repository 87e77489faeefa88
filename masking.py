"""Layers that let a convolutional network ignore the zero padding of short clips.

Every clip is zero-padded after its sound to the model's 500-frame window
(16 s), and the median clip fills only ~80 frames of it, so a plain global
average is mostly padding and shifts with the clip's length. These layers
carry a frame mask (1 = sound, 0 = padding) alongside the activations and
pool over real frames only. A frame is padding when all its mel bands are
exactly zero, which after per-clip z-normalisation only padding (or a
SpecAugment time mask) is.

Like :mod:`protonet` they are registered for ``safe_mode`` loading and use
plain tensor ops only, so a model using them exports to ONNX and TFLite.
"""
from __future__ import annotations

import keras
from keras import ops

from protonet import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameMask(keras.layers.Layer):
    """(B, T, F) features -> (B, T, 1) float mask: 1 where any band is non-zero."""

    def call(self, x):
        return ops.cast(ops.max(ops.abs(x), axis=-1, keepdims=True) > 0, x.dtype)

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
        return ops.max_pool(x + (mask - 1.0) * 1e4, 2, 2, padding="same") * pooled_mask, pooled_mask


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMeanMaxPooling(keras.layers.Layer):
    """Mean and max of ``x`` (B, T, D) over the frames where ``mask`` (B, T, 1) is 1 -> (B, 2 D).

    A clip without any real frame (silence, or everything masked during
    training) pools to zeros instead of averaging padding.
    """

    def call(self, inputs):
        x, mask = inputs
        count = ops.sum(mask, axis=1)                                   # (B, 1)
        mean = ops.sum(x * mask, axis=1) / ops.maximum(count, 1.0)
        peak = ops.max(x + (mask - 1.0) * 1e4, axis=1) * ops.cast(count > 0, x.dtype)
        return ops.concatenate([mean, peak], axis=-1)

    def compute_output_shape(self, input_shapes):
        x_shape = input_shapes[0]
        return (x_shape[0], 2 * x_shape[-1])
