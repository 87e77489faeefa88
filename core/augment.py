"""Training-time augmentation: calibrated wind mixing, spectral tilt, time shift, SpecAugment, mixup.

All functions take an explicit ``numpy.random.Generator`` so a run's seed
fixes every draw. None of this is part of a saved model: inference graphs
stay free of random layers and export cleanly.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .audio import mix_at_snr
from .features import FeatureConfig, clip_features, n_real_frames


def spec_augment(x: np.ndarray, rng: np.random.Generator, time_masks: int = 2, max_time: int = 40,
                 freq_masks: int = 2, max_freq: int = 16) -> np.ndarray:
    """SpecAugment on a batch (B, frames, mels): zero random time and frequency bands.

    Zero is each clip's mean after z-normalisation, so a mask hides information
    without adding any. Time masks fall inside each clip's real (non-padding) frames.
    """
    x = x.copy()
    b, _, f = x.shape
    for i in range(b):
        t = n_real_frames(x[i])   # on a short clip most of the window is padding
        for _ in range(time_masks):
            w = int(rng.integers(0, max_time + 1))
            s = int(rng.integers(0, max(1, t - w)))
            x[i, s:s + w, :] = 0.0
        for _ in range(freq_masks):
            w = int(rng.integers(0, max_freq + 1))
            s = int(rng.integers(0, max(1, f - w)))
            x[i, :, s:s + w] = 0.0
    return x


def random_shift(n: int, rng: np.random.Generator, max_fraction: float = 0.2) -> int:
    """A circular time shift for a clip of ``n`` samples: up to ``max_fraction`` of it either way (0 draws nothing)."""
    limit = int(n * max_fraction)
    return int(rng.integers(-limit, limit + 1)) if limit else 0


def spectral_tilt(y: np.ndarray, rng: np.random.Generator, max_coef: float = 0.5) -> np.ndarray:
    """A random first-order tilt ``y[n] - a y[n-1]``, ``a`` uniform in [-max_coef, max_coef].

    The frequency-dependent gain a microphone or a recording chain adds: with
    a = 0.5 the lows drop 6 dB and the top rises 3.5 dB; a < 0 tilts the other
    way. (A plain gain would change nothing: features are referenced to each
    clip's loudest bin and z-normalised.)
    """
    a = np.float32(rng.uniform(-max_coef, max_coef))
    return y - a * np.concatenate([np.zeros(1, y.dtype), y[:-1]])


def random_crop(y: np.ndarray, length: int, rng: np.random.Generator, shift: int = 0) -> np.ndarray:
    """A random excerpt of ``length`` samples (the whole clip if it is not longer) of ``y`` rolled by ``shift``.

    The excerpt of ``np.roll(y, shift)``, cut from ``y`` itself: rolling a
    16 s window to keep 4 s of it cost a twentieth of an augmented example.
    """
    if len(y) <= length:
        return np.roll(y, shift) if shift else y
    start = int(rng.integers(0, len(y) - length + 1))
    first = (start - shift) % len(y)
    if first + length <= len(y):
        return y[first:first + length]
    return np.concatenate([y[first:], y[:first + length - len(y)]])


def mixup(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, alpha: float = 0.2):
    """Blend each example with a random partner: x' = l x + (1-l) x_j, same for one-hot y."""
    lam = rng.beta(alpha, alpha, size=(len(x), 1)).astype(np.float32)
    j = rng.permutation(len(x))
    return lam[:, :, None] * x + (1 - lam[:, :, None]) * x[j], lam * y + (1 - lam) * y[j]


@dataclasses.dataclass
class WaveAugment:
    """Per-clip waveform augmentation, then features.

    ``snr_db`` is the calibrated range: SNR is measured on the call's active
    part, so 5 dB means the wind is 5 dB below the call itself, not below a
    clip that is mostly silence. With ``crop_frames`` each variant is a random
    excerpt of that many frames (after the shift, before the wind), a cheap way
    to show a network many placements of a call. ``tilt`` is the largest
    :func:`spectral_tilt` coefficient (0: none).
    """
    noise_bank: list
    cfg: FeatureConfig
    p_noise: float = 0.5
    snr_db: tuple = (5.0, 25.0)
    tilt: float = 0.0
    max_shift: float = 0.2
    crop_frames: int | None = None

    @property
    def n_frames(self) -> int:
        """Frames of each example that :meth:`features` returns."""
        return self.crop_frames or self.cfg.n_frames

    def wave(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random waveform variant of ``y``."""
        shift = random_shift(len(y), rng, self.max_shift)
        if self.crop_frames:
            y = random_crop(y, (self.crop_frames - 1) * self.cfg.hop_length, rng, shift)
        elif shift:
            y = np.roll(y, shift)
        if self.noise_bank and rng.random() < self.p_noise:
            noise = self.noise_bank[int(rng.integers(len(self.noise_bank)))]
            y = mix_at_snr(y, noise, float(rng.uniform(*self.snr_db)), rng)
        return spectral_tilt(y, rng, self.tilt) if self.tilt else y

    def features(self, clips: list, rng: np.random.Generator) -> np.ndarray:
        """Features (B, n_frames, mels) of one random variant of each clip."""
        # cut to the model's window first, so an excerpt comes from audio the model would see
        return np.stack([clip_features(self.wave(y[:self.cfg.window_samples], rng), self.cfg, self.n_frames)
                         for y in clips])
