"""Where a classifier breaks: accuracy under noise at a calibrated SNR, feature noise, and adversarial attacks.

Noise is mixed into the waveform at an SNR measured on the call's active part
(``audio.mix_at_snr``, as ``enhance.py`` trains), then featurised by the model's front end
like any clip. Every other perturbation acts on the model input (the z-normalised log-Mel
window, MFCCs, or a backbone's chunk embeddings), and only on its real frames: padding stays
zero, so a masked model still sees where the clip ends (noise on the padding would turn it
into "sound"). Its unit is ``scale``, one standard deviation per feature
(``model_data.feature_scale``): for a log-Mel window, 1.0, one standard deviation of the
clip's dB values.

=========  ==============================================================  =====================
attack     step                                                            source
=========  ==============================================================  =====================
FGSM       x + eps * sign(grad_x CE(y, f(x)))                              Goodfellow et al. 2015
PGD        FGSM steps of eps / 4 from a random start in the L-inf ball,   Madry et al. 2018
           projected back onto it after each step
DeepFool   the smallest L2 step to the nearest linearised class boundary,  Moosavi-Dezfooli et
           repeated until the label flips, overshoot 0.02                  al. 2016
=========  ==============================================================  =====================

Attacks use the true label (FGSM, PGD) and the logits (DeepFool). Their gradients are
XLA-compiled TensorFlow functions, compiled once per model and batch shape
(:func:`attack_gradients`); this module imports TensorFlow only when an attack runs.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from .audio import mix_at_snr
from .features import real_frame_mask
from .reports import _plt, save_figure


def real_frame_weights(x: np.ndarray) -> np.ndarray:
    """(n, frames, 1) float32: 1 on the frames of ``x`` (n, frames, mels) holding sound, 0 on padding."""
    return real_frame_mask(x)[..., None].astype(np.float32)


def mixed_features(audio: list[np.ndarray], noise_for: Callable[[int, int], np.ndarray], snr_db: float,
                   features: Callable[[np.ndarray], np.ndarray], seed: int) -> np.ndarray:
    """``features`` (a front end's) of every clip mixed with ``noise_for(i, n_samples)`` at ``snr_db``.

    Clip i draws its noise excerpt from a generator seeded by (seed, i), so every SNR of a
    curve uses the same noise on the same clip and the curve measures the level alone.
    """
    return np.stack([features(mix_at_snr(y, noise_for(i, len(y)), snr_db, np.random.default_rng([seed, i])))
                     for i, y in enumerate(audio)])


def white_noise(seed: int) -> Callable[[int, int], np.ndarray]:
    """``noise_for(i, n)``: n samples of Gaussian white noise, the same for the same (seed, i)."""
    return lambda i, n: np.random.default_rng([seed, i, 1]).standard_normal(n).astype(np.float32)


def recording_noise(bank: list[np.ndarray], seed: int) -> Callable[[int, int], np.ndarray]:
    """``noise_for(i, n)``: one of the ``bank`` recordings, chosen by (seed, i) (``mix_at_snr`` cuts the excerpt)."""
    return lambda i, n: bank[int(np.random.default_rng([seed, i, 2]).integers(len(bank)))]


def feature_noise(x: np.ndarray, sigma: float, seed: int, scale=1.0) -> np.ndarray:
    """``x`` plus Gaussian noise of standard deviation ``sigma * scale`` on its real frames."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    return (x + sigma * scale * noise * real_frame_weights(x)).astype(np.float32)


@functools.lru_cache(maxsize=4)   # a run's models; bounded, since each entry keeps its model alive
def attack_gradients(logits_model) -> dict:
    """The gradients the attacks take of ``logits_model``, as functions of numpy arrays (built once per model).

    ``"loss"(x, y)``: d CE(y, softmax(logits(x))) / d x, summed over the batch, so each
    example's own gradient. ``"classes"(x)``: the logits (n, C) and d logits[:, k] / d x for
    every class k (n, C, frames, mels). Each is a ``tf.function`` compiled by XLA for every
    batch shape it meets (about 2 s each; ``robustness.py`` keeps the programs for its next
    run, ``core.compile_cache``): on the main model a batch of 64 then costs 0.19 s against
    0.65 s eagerly, and a default ``robustness.py`` run makes 330 loss-gradient calls.
    """
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def loss(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = logits_model(x, training=False)
            total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return tape.gradient(total, x)

    @tf.function(jit_compile=True)
    def classes(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            logits = logits_model(x, training=False)
            per_class = [tf.reduce_sum(logits[:, k]) for k in range(logits.shape[-1])]
        return logits, tf.stack([tape.gradient(score, x) for score in per_class], axis=1)

    return {"loss": lambda x, y: loss(tf.constant(x, tf.float32), tf.constant(y, tf.int64)).numpy(),
            "classes": lambda x: tuple(t.numpy() for t in classes(tf.constant(x, tf.float32)))}


def fgsm(logits_model, x: np.ndarray, y: np.ndarray, eps: float, scale=1.0) -> np.ndarray:
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015): one L-inf step of size ``eps * scale`` up the loss."""
    step = np.sign(attack_gradients(logits_model)["loss"](x, y)) * real_frame_weights(x)
    return (x + eps * scale * step).astype(np.float32)


def pgd(logits_model, x: np.ndarray, y: np.ndarray, eps: float, steps: int = 10, seed: int = 0,
        scale=1.0) -> np.ndarray:
    """Projected Gradient Descent in the L-inf ball of radius ``eps * scale`` (Madry et al., ICLR 2018).

    A uniform random start in the ball, then ``steps`` sign-gradient steps of a quarter
    radius, each projected back onto the ball (real frames only).
    """
    real = real_frame_weights(x)
    radius = np.broadcast_to(np.float32(eps) * np.asarray(scale, np.float32), x.shape[-1:])
    rng = np.random.default_rng(seed)
    loss_gradient = attack_gradients(logits_model)["loss"]
    adv = x + rng.uniform(-radius, radius, x.shape).astype(np.float32) * real
    for _ in range(steps):
        adv = adv + radius / 4 * np.sign(loss_gradient(adv, y)) * real
        adv = x + np.clip(adv - x, -radius, radius)
    return adv.astype(np.float32)


def deepfool(logits_model, x: np.ndarray, max_iter: int = 50, overshoot: float = 0.02):
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016), multi-class, L2, on a batch (n, frames, mels).

    Each step linearises every logit f_k around the current point and moves to the nearest
    boundary of the original class k0: l = argmin_k |f_k - f_k0| / ||grad(f_k - f_k0)||,
    r = (|f_l - f_k0| + 1e-4) / ||w_l||^2 * w_l. The total r, times (1 + overshoot), is
    applied until the label changes. Returns (perturbations r (n, frames, mels), iterations
    used (n,), whether the label flipped (n,)).
    """
    real = real_frame_weights(x)
    logits_and_gradients = attack_gradients(logits_model)["classes"]
    start = np.asarray(logits_model(x, training=False)).argmax(axis=1)
    total = np.zeros_like(x)
    iterations = np.zeros(len(x), int)
    active = np.ones(len(x), bool)
    rows = np.arange(len(x))
    for _ in range(max_iter):
        f, grads = logits_and_gradients(x + (1 + overshoot) * total)
        active &= f.argmax(axis=1) == start
        if not active.any():
            break
        grads = grads * real[:, None]
        w = grads - grads[rows, start][:, None]                          # (n, C, frames, mels)
        gap = np.abs(f - f[rows, start][:, None])                       # (n, C)
        norms = np.sqrt(np.sum(w ** 2, axis=(2, 3))) + 1e-12
        ratio = np.where(np.arange(f.shape[1])[None] == start[:, None], np.inf, gap / norms)
        nearest = ratio.argmin(axis=1)
        step = ((gap[rows, nearest] + 1e-4) / norms[rows, nearest] ** 2)[:, None, None] * w[rows, nearest]
        total += step * active[:, None, None]
        iterations += active
    return (1 + overshoot) * total, iterations, ~active


def in_batches(fn, batch: int, *arrays):
    """``fn`` applied to consecutive slices of ``arrays`` of ``batch`` rows, results concatenated."""
    n = len(arrays[0])
    return np.concatenate([fn(*(a[i:i + batch] for a in arrays)) for i in range(0, n, batch)])


# ---------------------------------------------------------------- pictures

def plot_snr_curves(table, title: str, path) -> None:
    """Accuracy and macro-F1 against SNR for each noise in ``table`` (kind, level, accuracy, macro_f1), clean dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    clean = table[table.kind == "clean"].iloc[0]
    for ax, metric in zip(axes, ("accuracy", "macro_f1")):
        for kind, part in table[(table.unit == "dB SNR") & (table.kind != "clean")].groupby("kind", sort=False):
            ax.plot(part.level, part[metric], marker="o", label=kind)
        ax.axhline(clean[metric], color="black", linestyle="--", linewidth=1, label="clean")
        ax.set_xlabel("SNR (dB, on the call's active part)")
        ax.set_title(metric.replace("_", "-"), fontsize=10)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_adversarial(table, title: str, path) -> None:
    """The seed's adversarial_sensitivity.png: accuracy against eps (FGSM, PGD) and against feature-noise sigma."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    clean = table[table.kind == "clean"].accuracy.iloc[0]

    def curve(ax, kind, **style):   # each curve starts at the clean accuracy, level 0
        part = table[table.kind == kind]
        ax.plot([0.0, *part.level], [clean, *part.accuracy], marker="o", **style)

    curve(axes[0], "fgsm", label="FGSM")
    curve(axes[0], "pgd", label="PGD")
    curve(axes[1], "feature_gaussian", color="tab:green", label="Gaussian noise on the features")
    axes[0].set_xlabel("eps (L-inf, feature std units)")
    axes[1].set_xlabel("sigma (feature std units)")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=0.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy")
    axes[0].set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_deepfool(rho: np.ndarray, title: str, path) -> None:
    """Histogram of DeepFool's relative minimal perturbations ||r||_2 / ||x||_2."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(rho, bins=30, color="tab:purple")
    ax.axvline(np.median(rho), color="black", linestyle="--", label=f"median {np.median(rho):.3g}")
    ax.set_xlabel("||r||_2 / ||x||_2 (real frames)")
    ax.set_ylabel("test clips")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
