"""Views of a trained Keras model: its logits and penultimate embedding, MC-dropout sampling, attention weights.

Every variant's saved model maps features to class probabilities through a
final head layer: a softmax ``Dense`` (the CNNs; sigmoid for a multi-label
VGG, train_vgg.py) or a
:class:`core.layers.PrototypeHead` (the transformer). Open-set scores need
what comes before the softmax (logits, for temperature scaling and the
energy score) and what goes into the head (the embedding, for centroid,
Mahalanobis and nearest-neighbour distances). :func:`logits_and_embedding`
builds that two-output view on the same weights; ``export.py`` exports it,
so ONNX and TFLite return exactly what Keras does.

This module imports Keras (hence TensorFlow); the TensorFlow-free backends
never need it.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .backends import VIEW_OUTPUTS
from .layers import MaskedAttentionPooling, PrototypeHead, squared_distances


class HeadLogits(keras.layers.Layer):
    """The pre-softmax scores of a trained head layer, computed with that layer's own weights.

    Never saved: it exists only inside the views this module builds.
    """

    def __init__(self, head, **kwargs):
        super().__init__(**kwargs)
        self.head = head

    def call(self, x):
        if isinstance(self.head, PrototypeHead):
            return -squared_distances(x, ops.cast(self.head.prototypes, x.dtype))
        return ops.matmul(x, self.head.kernel) + self.head.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.head.compute_output_shape(input_shape)[-1])


def has_logits(head) -> bool:
    """Whether ``head`` is a layer whose pre-activation scores :class:`HeadLogits` knows how to compute."""
    return isinstance(head, PrototypeHead) or (
        isinstance(head, keras.layers.Dense) and head.activation in (keras.activations.softmax,
                                                                     keras.activations.sigmoid))


def head_activation(model: keras.Model) -> str:
    """"sigmoid" when ``model`` ends in a sigmoid ``Dense`` (independent classes), else "softmax"."""
    head = model.layers[-1]
    return "sigmoid" if getattr(head, "activation", None) is keras.activations.sigmoid else "softmax"


def logits_and_embedding(model: keras.Model) -> keras.Model:
    """A model with the same input as ``model`` and two outputs, logits (B, C) and embedding (B, D).

    The embedding is the input of the final (head) layer. For a head this
    module does not know, the logits are the log of the probabilities: equal
    to the true logits up to a per-row constant, which softmax, temperature
    scaling and every distance score ignore (only the energy score needs the
    true logits).
    """
    head = model.layers[-1]
    embedding = head.input
    if has_logits(head):
        logits = HeadLogits(head, name=VIEW_OUTPUTS[0])(embedding)
    else:
        logits = keras.layers.Activation(lambda p: ops.log(ops.maximum(p, 1e-12)),
                                           name=VIEW_OUTPUTS[0])(model.output)
    embedding = keras.layers.Identity(name=VIEW_OUTPUTS[1])(embedding)
    return keras.Model(model.inputs, [logits, embedding], name=f"{model.name}_views")


def mc_dropout_probabilities(model: keras.Model, x: np.ndarray, samples: int = 20, seed: int = 0,
                             batch_size: int = 64) -> np.ndarray:
    """(samples, n, C) class probabilities of ``x`` with dropout active and everything else in inference mode.

    Calling a Keras model with ``training=True`` would also switch
    BatchNormalization to batch statistics; a BatchNormalization layer that is
    not trainable runs in inference mode whatever ``training`` says (Keras 3),
    so those layers are frozen for the duration. ``seed`` fixes the dropout
    masks.
    """
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    was_trainable = [layer.trainable for layer in norms]
    keras.utils.set_random_seed(seed)
    try:
        for layer in norms:
            layer.trainable = False
        return np.stack([np.concatenate([np.asarray(model(x[i:i + batch_size], training=True))
                                         for i in range(0, len(x), batch_size)]) for _ in range(samples)])
    finally:
        for layer, trainable in zip(norms, was_trainable):
            layer.trainable = trainable


def attention_weights(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(n, T) weights that ``model``'s :class:`core.layers.MaskedAttentionPooling` gives the steps of features ``x``.

    Each row sums to 1 over the clip's real steps and is 0 on padding (all
    zeros for a clip without sound). The steps are those the layer attends
    over: the input frames when nothing before it shortens the time axis.
    Raises ValueError for a model without that layer.
    """
    layer = next((la for la in model.layers if isinstance(la, MaskedAttentionPooling)), None)
    if layer is None:
        raise ValueError(f"model {model.name} has no attention layer")
    steps, mask = keras.Model(model.inputs, layer.input).predict(np.asarray(x, np.float32), batch_size, verbose=0)
    return np.asarray(layer.attention(steps, mask))
