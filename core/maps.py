"""Attribution maps from a model's answers, in NumPy: what every explanation backend shares.

The methods here need only callables: ``gradients(xs, c)`` (d logit_c / d xs for a batch
of windows), ``probabilities(xs)`` (the model's class probabilities of a batch), or a
convolution's activations and their gradients. :mod:`core.saliency` supplies them from a
Keras model and :mod:`core.explain_graphs` from ONNX graphs run by onnxruntime, so the
maps are one computation whichever runs the model. Conventions are
:mod:`core.saliency`'s: a map covers the window's real frames, (n_real, n_mels)
float32, and "removed" is 0. Imports neither Keras nor TensorFlow.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .features import n_real_frames


METHODS = ("saliency", "smoothgrad", "ig", "gradcam", "lrp", "lime", "shap", "attention")


class MethodUnavailable(ValueError):
    """The model lacks the layers an attribution method needs; ``str()`` is one line."""


def window_predictor(probabilities: Callable[[np.ndarray], np.ndarray], n_frames: int,
                     batch: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(xs)``: class probabilities (n, C) of crops (n, frames <= n_frames, mels), zero-padded to the window.

    ``probabilities`` maps a batch of at most ``batch`` full windows to the model's outputs.
    """
    def predict(xs):
        xs = np.asarray(xs, np.float32)
        padded = np.zeros((len(xs), n_frames, xs.shape[2]), np.float32)
        padded[:, :xs.shape[1]] = xs[:, :n_frames]
        return np.concatenate([np.asarray(probabilities(padded[i:i + batch])) for i in range(0, len(xs), batch)])
    return predict


def vanilla_saliency(gradients, x: np.ndarray, c: int) -> np.ndarray:
    """|d logit_c / d x| over the real frames (Simonyan et al., ICLR workshop 2014).

    ``gradients`` (here and below): d logit_c / d xs for a batch (n, frames, mels), as
    :func:`core.saliency.input_gradients` or :class:`core.explain_graphs.GraphExplainer` give it.
    """
    return np.abs(gradients(x[None], c)[0, :n_real_frames(x)]).astype(np.float32)


def smoothgrad(gradients, x: np.ndarray, c: int, samples: int = 25, noise: float = 0.15,
               seed: int = 0) -> np.ndarray:
    """Mean |gradient| over ``samples`` copies of x with Gaussian noise on the real frames (Smilkov et al. 2017).

    sigma = ``noise`` * (max - min) of the real frames, the paper's 10-20 % rule. Padding
    stays zero, so a masked model still sees where the clip ends.
    """
    n = n_real_frames(x)
    rng = np.random.default_rng(seed)
    sigma = noise * float(np.ptp(x[:n]))
    xs = np.repeat(x[None], samples, axis=0).astype(np.float32)
    xs[:, :n] += rng.normal(0.0, sigma, (samples, n, x.shape[1])).astype(np.float32)
    return np.abs(gradients(xs, c)[:, :n]).mean(axis=0).astype(np.float32)


def integrated_gradients(gradients, x: np.ndarray, c: int, steps: int = 32) -> np.ndarray:
    """Integrated Gradients from the all-zero ("removed") input (Sundararajan et al., ICML 2017).

    x * mean of the gradients at alpha * x, alpha at the ``steps`` midpoints of [0, 1].
    Completeness: the map sums to about logit_c(x) - logit_c(0).
    """
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
    grads = gradients(alphas[:, None, None] * x[None], c)
    n = n_real_frames(x)
    return (x[:n] * grads[:, :n].mean(axis=0)).astype(np.float32)


def _resize(a: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of ``a`` along axis 0 to ``n`` samples, cell centres aligned."""
    src = (np.arange(n) + 0.5) * len(a) / n - 0.5
    return np.stack([np.interp(src, np.arange(len(a)), col) for col in a.reshape(len(a), -1).T], axis=-1
                    ).reshape((n,) + a.shape[1:])


def cam_to_input(cam: np.ndarray, frames: int, mels: int) -> np.ndarray:
    """A Grad-CAM map over a conv layer's positions, resized to the (frames, mels) window.

    1D (T'): a map over time, repeated across mel bands. 2D (H, W): the axis pairing whose
    aspect ratio is closer to frames/mels is taken as (time, mel), so a network that turns
    the window into a (mels, frames) image (AlexNet-Mel) is mapped back correctly.
    """
    if cam.ndim == 1:
        return np.repeat(_resize(cam, frames)[:, None], mels, axis=1)
    ratio = np.log(cam.shape[0] / cam.shape[1])
    if abs(ratio - np.log(frames / mels)) > abs(ratio + np.log(frames / mels)):
        cam = cam.T
    return _resize(_resize(cam, frames).T, mels).T


def grad_cam_map(activations: np.ndarray, gradients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Grad-CAM's map of window ``x`` from a convolution's ``activations`` A_k and d logit_c / d A_k.

    w_k: the mean gradient over positions; map = ReLU(sum_k w_k A_k), resized to the
    window (:func:`cam_to_input`) and cut to its real frames.
    """
    weights = gradients.reshape(-1, gradients.shape[-1]).mean(axis=0)
    cam = np.maximum(activations @ weights, 0.0)
    return cam_to_input(cam, x.shape[0], x.shape[1])[:n_real_frames(x)].astype(np.float32)


def patch_segments(shape: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """Integer labels (frames, mels) of a grid of ``patch``-sized time-frequency patches, row-major."""
    frames, mels = shape
    rows, cols = np.arange(frames) // patch[0], np.arange(mels) // patch[1]
    return (rows[:, None] * (cols.max() + 1) + cols[None, :]).astype(int)


def _hide(x_real: np.ndarray, segments: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Copies of ``x_real`` (n, frames, mels) with the patches where ``keep`` (n, patches) is 0 set to 0."""
    return np.asarray(x_real, np.float32)[None] * keep[:, segments].astype(np.float32)


def lime_map(predict, x: np.ndarray, c: int, patch=(16, 16), samples: int = 1000, seed: int = 0) -> np.ndarray:
    """LIME (Ribeiro et al., KDD 2016) with time-frequency patches as the interpretable features.

    ``lime.lime_image`` draws ``samples`` random subsets of patches, hides the others
    (value 0), and fits its locally weighted ridge surrogate to p_c; a patch's map value
    is its surrogate weight.
    """
    from lime import lime_image
    x_real = x[:n_real_frames(x)]
    segments = patch_segments(x_real.shape, patch)
    explanation = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        x_real.astype(np.float64), lambda images: predict(images[..., 0]), labels=(c,), top_labels=None,
        hide_color=0.0, num_features=int(segments.max()) + 1, num_samples=samples, batch_size=64,
        segmentation_fn=lambda image: segments)
    weights = np.zeros(int(segments.max()) + 1)
    for segment, weight in explanation.local_exp[c]:
        weights[segment] = weight
    return weights[segments].astype(np.float32)


def shap_map(predict, x: np.ndarray, c: int, patch=(16, 16), samples: int = 1000, seed: int = 0) -> np.ndarray:
    """Kernel SHAP (Lundberg & Lee, NeurIPS 2017) values of time-frequency patches for p_c.

    Players are the patches, a coalition keeps its patches and hides the rest (value 0),
    the reference is every patch hidden; ``shap.KernelExplainer`` with ``samples``
    coalitions. The values sum to p_c(x) - p_c(all hidden).
    """
    import shap
    x_real = x[:n_real_frames(x)]
    segments = patch_segments(x_real.shape, patch)
    n = int(segments.max()) + 1
    np.random.seed(seed)   # KernelExplainer draws coalitions from numpy's global generator
    explainer = shap.KernelExplainer(lambda keep: predict(_hide(x_real, segments, keep))[:, c], np.zeros((1, n)))
    values = explainer.shap_values(np.ones((1, n)), nsamples=samples, silent=True)
    return np.asarray(values, np.float64).reshape(-1)[segments].astype(np.float32)


class MapExplainer:
    """What every explainer shares: ``explain`` checks the method, then maps from gradients and probabilities.

    A subclass gives ``available(method)`` (None, or the one-line reason the method does
    not apply), ``gradients(xs, c)``, ``predict(xs)``, the settings ``seed``, ``patch``,
    ``lime_samples`` and ``shap_samples``, and ``model_map(method, x, c)`` for the methods
    that need more of the model than that (Grad-CAM, LRP, attention):
    :class:`core.saliency.Explainer` on Keras, :class:`core.explain_graphs.GraphExplainer`
    on onnxruntime.
    """

    def explain(self, method: str, x: np.ndarray, c: int) -> np.ndarray:
        """The ``method`` map (n_real, mels) of class ``c`` on window ``x`` (frames, mels)."""
        reason = self.available(method)
        if reason:
            raise MethodUnavailable(reason)
        x = np.asarray(x, np.float32)
        if method == "saliency":
            return vanilla_saliency(self.gradients, x, c)
        if method == "smoothgrad":
            return smoothgrad(self.gradients, x, c, seed=self.seed)
        if method == "ig":
            return integrated_gradients(self.gradients, x, c)
        if method == "lime":
            return lime_map(self.predict, x, c, self.patch, self.lime_samples, self.seed)
        if method == "shap":
            return shap_map(self.predict, x, c, self.patch, self.shap_samples, self.seed)
        return self.model_map(method, x, c)
