"""Attribution maps over one model input: which log-Mel bins a Keras classifier's decision rests on.

Every method takes the model's padded window ``x`` (frames, n_mels), the class ``c`` to
explain, and returns a map over the window's real frames only, (n_real, n_mels) float32
(``features.n_real_frames``: padding after the sound is nobody's evidence). Larger is more
important; some maps are signed (negative = evidence against ``c``).

===============  =============================================================  ======================
method           map                                                            source
===============  =============================================================  ======================
saliency         |d logit_c / d x|                                              Simonyan et al. 2014
smoothgrad       mean |d logit_c / d x| over noisy copies of x (sigma 15 %)     Smilkov et al. 2017
ig               (x - 0) * mean gradient on the straight path 0 -> x            Sundararajan et al. 2017
gradcam          ReLU(sum_k w_k A_k), w_k = mean gradient of the last conv map  Selvaraju et al. 2017
lrp              epsilon-rule relevance of logit_c, layer by layer              Bach et al. 2015
lime             weights of a sparse linear surrogate over time-frequency       Ribeiro et al. 2016
                 patches (``lime`` package)
shap             Kernel SHAP values of the same patches (``shap`` package)      Lundberg & Lee 2017
attention        attention rollout over the MultiHeadAttention layers, or the   Abnar & Zuidema 2020;
                 weights of an additive attention pooling over time             Bahdanau et al. 2015
===============  =============================================================  ======================

Gradients are taken of the logits (``model_views.logits_and_embedding``), not of the
softmax, whose gradient vanishes on confident predictions. "Removed" means set to 0, the
clip's mean level after z-normalisation and the value padding carries; IG's baseline,
LIME's and SHAP's hidden patches, and ``attribution_metrics`` all use it, so an explanation
is scored by the same removal it was computed with.

Grad-CAM needs a convolution (a 1D one gives a map over time only, the same for every mel
band) and LRP a convolutional network; attention needs MultiHeadAttention layers or a
``MaskedAttentionPooling``. A model without them raises :class:`MethodUnavailable`, whose
``str()`` is one line.

A model on MFCCs is explained over the same log-Mel window: :class:`MFCCOfLogMel` puts its
front end, which is linear in the window's dB map, in front of it as a layer
(``Explainer(front=...)``), so every map lies on log-Mel bins one can see and hear. Grad-CAM
and LRP are refused for it: their maps follow convolutions over the model's own input.
This module imports Keras and TensorFlow; what each method does with the model's gradients and
probabilities is NumPy, in :mod:`core.maps`, shared with the ONNX graphs of :mod:`core.explain_graphs`.
"""
from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .features import FeatureConfig, MFCCConfig, mfcc_matrices, n_real_frames
from .layers import MaskedAttentionPooling
from .maps import METHODS, MapExplainer, MethodUnavailable, cam_to_input, grad_cam_map, window_predictor
from .model_views import attention_weights, logits_and_embedding

LRP_EPSILON = 0.01
CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D)


# ---------------------------------------------------------------- model plumbing
class MFCCOfLogMel(keras.layers.Layer):
    """One clip's MFCC front end (``features.mfcc_of_log_mel``) as a layer over its z-normalised log-Mel window.

    The window's dB map is ``z * std + mean`` on its ``n_real`` frames (the clip's own
    level, undoing ``normalize_frames``), so a removed bin (0) is the clip's mean level,
    as for a log-Mel model; the MFCCs and their deltas are linear in it
    (``features.mfcc_matrices``), and the frames after ``n_real`` are zero, as padding is.
    Built per clip by :func:`mfcc_front`; never saved.
    """

    def __init__(self, mean: float, std: float, n_real: int, cfg: FeatureConfig, params: MFCCConfig, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std, self.n_real, self.n_frames = float(mean), float(std), int(n_real), cfg.n_frames
        dct, deltas = mfcc_matrices(self.n_real, cfg, params)
        self.dct = tf.constant(dct, tf.float32)
        self.deltas = [tf.constant(d, tf.float32) for d in deltas]

    def call(self, z):
        coefficients = tf.matmul(z[:, :self.n_real] * self.std + self.mean, self.dct)
        parts = [coefficients] + [tf.einsum("tj,bjk->btk", d, coefficients) for d in self.deltas]
        return tf.pad(tf.concat(parts, axis=-1), [[0, 0], [0, self.n_frames - self.n_real], [0, 0]])


def mfcc_front(db: np.ndarray, cfg: FeatureConfig, params: MFCCConfig) -> MFCCOfLogMel:
    """The :class:`MFCCOfLogMel` of the clip whose ``features.log_mel`` map is ``db``."""
    db = db[:cfg.n_frames]
    return MFCCOfLogMel(db.mean(), db.std() + 1e-6, len(db), cfg, params)   # normalize_frames' mean and std


def behind(front, model: keras.Model) -> keras.Model:
    """``model`` with the layer ``front`` (the explained input -> the model's input) in front of it."""
    inputs = keras.Input((front.n_frames, int(front.dct.shape[0])))
    return keras.Model(inputs, model(front(inputs)), name=f"{model.name}_over_log_mel")


def logits_model(model: keras.Model) -> keras.Model:
    """``model``'s input mapped to its pre-softmax class scores (B, C), on the same weights."""
    views = logits_and_embedding(model)
    return keras.Model(views.inputs[0], views.outputs[0], name=f"{model.name}_logits")


def input_gradients(scores: keras.Model, compiled: bool = True) -> Callable[[np.ndarray, int], np.ndarray]:
    """``gradients(xs, c)``: d scores[:, c] / d xs for a batch xs (n, frames, mels), one backward pass.

    ``compiled``: one ``tf.function`` for every batch size and class, traced on its first
    call and reused after: on the main model, saliency, SmoothGrad and IG take 0.8 s that way
    on the first window against 1.0 s eagerly, and 0.3 s on every window after
    (``explain.py --dir``). Eager for a model that serves one window only (an MFCC model's,
    whose front is built per window): a trace per window buys little, and TensorFlow warns
    about functions traced again and again.
    """
    def gradients(xs, c):
        return logit_gradient(scores, xs, c)

    if compiled:
        gradients = tf.function(gradients, input_signature=[
            tf.TensorSpec((None, *scores.input_shape[1:]), tf.float32), tf.TensorSpec((), tf.int32)])
    return lambda xs, c: gradients(tf.convert_to_tensor(np.asarray(xs, np.float32)), tf.constant(c, tf.int32)).numpy()


def logit_gradient(scores: keras.Model, xs, c):
    """d scores[:, c] / d xs, tensors in and out: a batch (n, frames, mels) and a class (scalar int32)."""
    with tf.GradientTape() as tape:
        tape.watch(xs)
        score = tf.reduce_sum(tf.gather(scores(xs, training=False), c, axis=1))
    return tape.gradient(score, xs)


def last_conv_layer(model: keras.Model):
    """The last Conv1D/Conv2D layer of ``model``; :class:`MethodUnavailable` if it has none."""
    convs = [layer for layer in model.layers if isinstance(layer, CONV_LAYERS)]
    if not convs:
        raise MethodUnavailable(f"model '{model.name}' has no convolution layer, which Grad-CAM and LRP need "
                                f"(try saliency, smoothgrad, ig, lime, shap or attention)")
    return convs[-1]


def grad_cam(model: keras.Model, x: np.ndarray, c: int, layer: str | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., ICCV 2017) of logit_c at the last convolution (or ``layer``).

    A_k: the layer's output channels; w_k: the mean over positions of d logit_c / d A_k;
    map = ReLU(sum_k w_k A_k), resized to the window (:func:`core.maps.grad_cam_map`).
    """
    activations, gradients = cam_gradients(conv_probe(model, layer), tf.constant(x[None].astype(np.float32)),
                                           tf.constant(c, tf.int32))
    return grad_cam_map(activations[0].numpy(), gradients[0].numpy(), x)


def conv_probe(model: keras.Model, layer: str | None = None) -> keras.Model:
    """``model``'s input mapped to [the last convolution's (or ``layer``'s) output, the logits]."""
    conv = model.get_layer(layer) if layer else last_conv_layer(model)
    views = logits_and_embedding(model)   # shares the model's graph, so conv.output lies on the logits' path
    return keras.Model(views.inputs[0], [conv.output, views.outputs[0]])


def cam_gradients(probe: keras.Model, xs, c):
    """(A, d logit_c / d A) for a batch of tensors ``xs``: a :func:`conv_probe`'s activations and their gradient."""
    with tf.GradientTape() as tape:
        activations, logits = probe(xs, training=False)
        score = tf.reduce_sum(tf.gather(logits, c, axis=1))
    return activations, tape.gradient(score, activations)


# ---------------------------------------------------------------- LRP
def _stabilised(z, epsilon: float):
    return z + epsilon * tf.where(z >= 0, 1.0, -1.0)


def _epsilon_rule(op, epsilon: float):
    """``op`` with its backward pass replaced by the LRP epsilon rule.

    The incoming "gradient" is the relevance R of the op's outputs z; the rule returns
    R_a = a * d/da sum(z * stopgrad(R / (z + eps sign z))) for each tensor input a (the
    "gradient x input" implementation trick, Montavon et al. 2019). For a linear layer
    that is R_j = sum_k a_j w_jk R_k / (z_k + eps); for an Add, relevance splits in
    proportion to the summands; through ReLU, pooling, reshapes and dropout it passes
    unchanged. Inputs the outputs do not depend on differentiably (a padding mask) get none.
    """
    def call(*args, **kwargs):
        flat = keras.tree.flatten((args, kwargs))
        where = [i for i, t in enumerate(flat) if tf.is_tensor(t) and t.dtype.is_floating]

        def run(tensors):
            filled = list(flat)
            for i, t in zip(where, tensors):
                filled[i] = t
            a, k = keras.tree.pack_sequence_as((args, kwargs), filled)
            return keras.tree.flatten(op(*a, **k))

        @tf.custom_gradient
        def relevance_op(*tensors):
            def backward(*relevance, variables=None):
                with tf.GradientTape() as tape:
                    tape.watch(tensors)
                    z = run(tensors)
                    total = tf.add_n([tf.reduce_sum(zo * tf.stop_gradient(r / _stabilised(zo, epsilon)))
                                      for zo, r in zip(z, relevance) if r is not None])
                grads = tape.gradient(total, list(tensors), unconnected_gradients="zero")
                return [t * g for t, g in zip(tensors, grads)], [None] * len(variables or [])
            return run(tensors), backward

        outputs = relevance_op(*[flat[i] for i in where])
        return outputs[0] if len(outputs) == 1 else list(outputs)
    return call


def lrp_epsilon(model: keras.Model, x: np.ndarray, c: int, epsilon: float = LRP_EPSILON) -> np.ndarray:
    """LRP-epsilon relevance (Bach et al., PLoS ONE 2015) of logit_c, for convolutional networks.

    The logits view's graph is run with every layer's backward pass replaced by
    :func:`_epsilon_rule`, starting from R = logit_c at class c; the relevance reaching the
    input is the map. Conservative up to what biases and epsilon absorb: without biases and
    with epsilon -> 0 it sums to logit_c. Uses Keras' functional-graph runner
    (``Functional._run_through_graph``). Refused for models without convolutions
    (attention and normalisation layers need other rules).
    """
    last_conv_layer(model)
    relevance = lrp_relevance(logits_model(model), tf.constant(x[None].astype(np.float32)), tf.constant(c, tf.int32),
                              epsilon)
    return relevance[0, :n_real_frames(x)].numpy().astype(np.float32)


def lrp_relevance(scores: keras.Model, xs, c, epsilon: float):
    """LRP-epsilon relevance of logit ``c`` for a batch of tensors ``xs`` through the logits model ``scores``."""
    with tf.GradientTape() as tape:
        tape.watch(xs)
        logits = scores._run_through_graph(xs, operation_fn=lambda op: _epsilon_rule(op, epsilon))
    return tape.gradient(logits, xs, output_gradients=tf.one_hot(c, tf.shape(logits)[-1]) * logits)


# ---------------------------------------------------------------- attention
def attention_layers(model: keras.Model) -> list:
    """The MultiHeadAttention layers of ``model``, or its MaskedAttentionPooling; :class:`MethodUnavailable` if none."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    layers = layers or [layer for layer in model.layers if isinstance(layer, MaskedAttentionPooling)]
    if not layers:
        raise MethodUnavailable(f"model '{model.name}' has no MultiHeadAttention or attention pooling layer, so "
                                f"no attention weights to show")
    return layers


def rollout(scores: list[np.ndarray], real: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, ACL 2020): each token's weight, from per-layer (T, T) head-mean scores.

    Per layer the residual is added as 0.5 A + 0.5 I and rows renormalised; the layers are
    multiplied from input to output. A token's weight is its mean rollout from the tokens
    where ``real`` is True (the ones the variants pool), or from all if none is.
    """
    tokens = scores[0].shape[0]
    flow = np.eye(tokens)
    for a in scores:
        a = 0.5 * a + 0.5 * np.eye(tokens)
        flow = (a / a.sum(axis=1, keepdims=True)) @ flow
    return flow[real if real.any() else slice(None)].mean(axis=0)


def attention_rollout(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """:func:`rollout` over the model's MultiHeadAttention layers (heads averaged), as a map over the window.

    Tokens are equal runs of frames (patches); the map is over time, the same for every
    mel band.
    """
    attention_layers(model)
    scores = []

    def record(op):
        if not isinstance(op, keras.layers.MultiHeadAttention):
            return op

        def call(*args, **kwargs):
            out, s = op(*args, return_attention_scores=True, **kwargs)
            scores.append(s[0].numpy().mean(axis=0))
            return out
        return call

    model._run_through_graph(tf.convert_to_tensor(x[None].astype(np.float32)), operation_fn=record)
    tokens = scores[0].shape[0]
    patch = x.shape[0] // tokens
    real = np.abs(x[:tokens * patch]).reshape(tokens, -1).max(axis=1) > 0
    frames = np.zeros(x.shape[0])
    frames[:tokens * patch] = np.repeat(rollout(scores, real), patch)
    return np.repeat(frames[:n_real_frames(x), None], x.shape[1], axis=1).astype(np.float32)


def pooling_attention(model: keras.Model, x_model: np.ndarray, frames: int, mels: int) -> np.ndarray:
    """The weights a ``MaskedAttentionPooling`` gives the steps of model input ``x_model``, as a (frames, mels) map.

    A map over time (the steps resized to the window's frames when the layers before the
    pooling shorten the time axis), the same for every mel band.
    """
    return cam_to_input(attention_weights(model, x_model[None])[0], frames, mels).astype(np.float32)


# ---------------------------------------------------------------- one entry point
class Explainer(MapExplainer):
    """Every method of this module for one Keras classifier; builds each model view once.

    ``front``, a layer such as :class:`MFCCOfLogMel`, maps the explained log-Mel window to
    the model's input; the maps are then over the window, not over the model's input.
    """

    def __init__(self, model: keras.Model, patch=(16, 16), lime_samples: int = 1000, shap_samples: int = 1000,
                 seed: int = 0, gradcam_layer: str | None = None, front=None):
        self.model, self.front = model, front
        scores = logits_model(model)
        self.gradients = (input_gradients(behind(front, scores), compiled=False) if front is not None
                          else input_gradients(scores))
        explained = behind(front, model) if front is not None else model
        self.predict = window_predictor(explained.predict_on_batch, int(explained.input_shape[1]))
        self.patch, self.lime_samples, self.shap_samples = tuple(patch), lime_samples, shap_samples
        self.seed, self.gradcam_layer = seed, gradcam_layer

    def available(self, method: str) -> str | None:
        """None if ``method`` applies to this model, else the one-line reason it does not."""
        try:
            if method in ("gradcam", "lrp") and self.front is not None:
                return (f"model '{self.model.name}' reads MFCCs: its convolutions run over them, not over "
                        f"log-Mel bins (try saliency, smoothgrad, ig, lime, shap or attention)")
            if method in ("gradcam", "lrp"):
                last_conv_layer(self.model)
            elif method == "attention":
                attention_layers(self.model)
            elif method not in METHODS:
                return f"unknown method '{method}' (choose from {', '.join(METHODS)})"
        except MethodUnavailable as e:
            return str(e)
        return None

    def model_map(self, method: str, x: np.ndarray, c: int) -> np.ndarray:
        """Grad-CAM's, LRP's or the attention map of class ``c`` on window ``x``."""
        if method == "gradcam":
            return grad_cam(self.model, x, c, self.gradcam_layer)
        if method == "lrp":
            return lrp_epsilon(self.model, x, c)
        if isinstance(attention_layers(self.model)[0], MaskedAttentionPooling):
            x_model = self.front(x[None]).numpy()[0] if self.front is not None else x
            return pooling_attention(self.model, x_model, *x.shape)[:n_real_frames(x)]
        return attention_rollout(self.model, x)
