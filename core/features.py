"""Log-Mel and MFCC features, and the on-disk cache.

One front end (librosa's: Slaney mel, centred frames) serves training and
inference alike; its parameters live in :class:`FeatureConfig`, which is
saved in every model's ``config.json`` and read back by every predictor. It is
computed with numpy and scipy.fft (equal to librosa's within 2e-5 dB) because
importing librosa pulls in numba, ~2 s of a one-file prediction's start.
MFCCs (:func:`mfcc_features`, parameters in :class:`MFCCConfig`) are the
DCT of that same log-Mel map before its z-normalisation, with Savitzky-Golay
deltas, also in numpy and equal to ``librosa.feature.mfcc`` and
``librosa.feature.delta``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft

FEATURE_VERSION = 1  # bump when the meaning of the features changes, so old models are refused


SCALINGS = ("db", "pcen")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the log-Mel front end (the design fixes the defaults).

    ``scaling`` is how the mel power becomes the map: ``"db"``, decibels
    relative to the loudest bin (:func:`power_to_db`), or ``"pcen"``,
    per-channel energy normalisation (:func:`pcen`, with the ``pcen_*``
    parameters). A config.json written before PCEN existed reads as ``"db"``.
    """
    sr: int = 16000
    n_mels: int = 128
    n_fft: int = 1024
    hop_length: int = 512
    n_frames: int = 500
    top_db: float = 80.0
    scaling: str = "db"
    pcen_time_constant: float = 0.06   # the PCEN parameters were chosen on validation: bench/pcen_params.py
    pcen_gain: float = 0.8
    pcen_bias: float = 2.0
    pcen_power: float = 0.25
    version: int = FEATURE_VERSION

    def __post_init__(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling {self.scaling!r}: one of {', '.join(SCALINGS)}")

    @property
    def window_seconds(self) -> float:
        """Audio covered by one ``n_frames`` window (16.0 s with the defaults)."""
        return self.n_frames * self.hop_length / self.sr

    @property
    def window_samples(self) -> int:
        return self.n_frames * self.hop_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown feature parameters {sorted(unknown)}")
        return cls(**d)

    def key(self) -> str:
        """Short stable hash of the parameters, used to key caches."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f_sp, min_log_mel, logstep = 200.0 / 3, 15.0, np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, min_log_mel + np.log(np.maximum(hz, 1000.0) / 1000.0) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_mel, logstep = 200.0 / 3, 15.0, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, 1000.0 * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=4)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) Slaney-normalised triangular filters, as ``librosa.filters.mel``."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_hz = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.float64(sr / 2))), n_mels + 2))
    ramps = mel_hz[:, None] - fft_hz[None, :]
    width = np.diff(mel_hz)[:, None]
    triangles = np.maximum(0.0, np.minimum(-ramps[:-2] / width[:-1], ramps[2:] / width[1:]))
    return (triangles * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]).astype(np.float32)


@lru_cache(maxsize=4)
def _sparse_filterbank_t(sr: int, n_fft: int, n_mels: int):
    """:func:`mel_filterbank` transposed, as a scipy.sparse CSC matrix (1 + n_fft // 2, n_mels).

    Each triangle spans at most a few dozen FFT bins (about 1 000 of the
    66 000 weights are non-zero at 128 mels, 1 024 points), so a sparse
    product is 6-7 times faster than the dense one here.
    """
    import scipy.sparse
    return scipy.sparse.csc_matrix(mel_filterbank(sr, n_fft, n_mels).T)


@lru_cache(maxsize=4)
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window of ``n_fft`` samples (librosa's ``"hann"``), float32."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def frame_centred(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """(frames, frame_length) view of ``y``'s centred frames: frame j is centred on sample j * hop_length.

    ``y`` is zero-padded by half a frame on each side, as librosa frames with
    ``center=True, pad_mode="constant"``.
    """
    return np.lib.stride_tricks.sliding_window_view(np.pad(y, frame_length // 2), frame_length)[::hop_length]


def centred_frames(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(frames, n_fft) float32 view of ``y``'s centred STFT frames (:func:`frame_centred`).

    ``y`` is first zero-padded to one whole FFT frame if it is shorter, so a
    short click still yields a spectrum.
    """
    if len(y) < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - len(y)))
    return frame_centred(np.asarray(y, np.float32), cfg.n_fft, cfg.hop_length)


def mel_power(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(frames, n_mels) mel power of STFT frames (frames, n_fft): Hann window, power 2, float32.

    scipy.fft transforms float32 in float32, 2-8 times faster here than
    numpy.fft, which works in float64; the dB maps differ by under 1e-5 dB.
    """
    spectrum = scipy.fft.rfft(frames * hann_window(cfg.n_fft), axis=1)
    return np.asarray((spectrum.real ** 2 + spectrum.imag ** 2) @ _sparse_filterbank_t(cfg.sr, cfg.n_fft, cfg.n_mels))


def power_to_db(mel: np.ndarray, top_db: float) -> np.ndarray:
    """dB relative to the loudest bin, floored ``top_db`` below it, as ``librosa.power_to_db(ref=np.max)``.

    Computed in float32 with the natural logarithm, which numpy vectorises
    (about 4 times faster here than ``log10``); the maps move by under 1e-5 dB.
    """
    db = np.log(np.maximum(mel, 1e-10).astype(np.float32, copy=False))
    db *= np.float32(10.0 / np.log(10.0))
    db -= db.max()   # the loudest bin is 0 dB: ref=np.max
    return np.maximum(db, np.float32(-top_db), out=db)


PCEN_INPUT_SCALE = 2.0 ** 31   # librosa's advice for audio in [-1, 1]: PCEN's bias and eps assume integer levels
PCEN_EPS = 1e-6


def pcen(mel: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Per-channel energy normalisation of a (frames, n_mels) mel power map, as ``librosa.pcen``; float32.

    Each band is divided by its own energy smoothed over time, M (a first-order
    IIR filter of time constant ``cfg.pcen_time_constant``), raised to
    ``pcen_gain``, then compressed: ``(S / (eps + M) ** gain + bias) ** power -
    bias ** power``, on the power scaled by ``PCEN_INPUT_SCALE``. The smoother
    starts at the window's first frame (librosa's default starts it at 1, which
    boosts a window that opens mid-call). Why it exists: a steady or slowly
    varying background (wind, rain, a hum) is turned down band by band, where
    the dB map keeps it at its level under the call.
    """
    s = mel.astype(np.float64) * PCEN_INPUT_SCALE
    t = cfg.pcen_time_constant * cfg.sr / cfg.hop_length
    b = (np.sqrt(1 + 4 * t ** 2) - 1) / (2 * t ** 2)
    import scipy.signal   # half a second of import here, which the dB front end does not need
    smooth, _ = scipy.signal.lfilter([b], [1, b - 1], s, axis=0, zi=(1 - b) * s[:1])
    gain = np.exp(-cfg.pcen_gain * (np.log(PCEN_EPS) + np.log1p(smooth / PCEN_EPS)))
    bias, power = cfg.pcen_bias, cfg.pcen_power
    return (bias ** power * np.expm1(power * np.log1p(s * gain / bias))).astype(np.float32)


def scale_mel(mel: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The map of a (frames, n_mels) mel power map that ``cfg.scaling`` names: dB or PCEN."""
    return power_to_db(mel, cfg.top_db) if cfg.scaling == "db" else pcen(mel, cfg)


def log_mel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-Mel spectrogram of ``y``, shape (frames, n_mels), in dB (float32), or PCEN (``cfg.scaling``).

    As ``librosa.power_to_db(librosa.feature.melspectrogram(...), ref=np.max)``:
    centred frames (zero padding, :func:`centred_frames`), periodic Hann
    window, power 2, dB relative to the loudest bin, floored ``top_db`` below it.
    """
    return scale_mel(mel_power(centred_frames(y, cfg), cfg), cfg)


def log_mels(windows: list[np.ndarray], starts: list[int], cfg: FeatureConfig) -> list[np.ndarray]:
    """:func:`log_mel` of each of successive windows of one recording, computing each shared STFT frame once.

    ``windows[i]`` is the recording's audio from sample ``starts[i]`` on. A
    frame clear of its window's edges (no zero padding in it) depends only
    on the recording, so the next window takes it from the previous one
    when both hold it: with the default 16 s windows every 8 s, half of each
    window's frames. The maps equal :func:`log_mel`'s of each window.
    """
    half, hop = cfg.n_fft // 2, cfg.hop_length
    out, previous = [], None   # previous: (start, mel power, mask of its edge-free frames)
    for y, start in zip(windows, starts):
        frames = centred_frames(y, cfg)
        offsets = np.arange(len(frames)) * hop
        clear = (offsets >= half) & (offsets + half <= len(y))
        mel = np.empty((len(frames), cfg.n_mels), np.float32)
        known = np.zeros(len(frames), bool)
        if previous is not None and (start - previous[0]) % hop == 0:
            shifted = np.arange(len(frames)) + (start - previous[0]) // hop   # the same frame in the previous window
            inside = (shifted >= 0) & (shifted < len(previous[1]))
            known[inside] = clear[inside] & previous[2][shifted[inside]]
            mel[known] = previous[1][shifted[known]]
        mel[~known] = mel_power(frames[~known], cfg)
        out.append(scale_mel(mel, cfg))
        previous = (start, mel, clear)
    return out


def normalize_frames(db: np.ndarray, n_frames: int) -> np.ndarray:
    """Z-normalise a (frames, n_mels) dB map over its real frames, then pad/truncate to ``n_frames``.

    Padding comes after the sound ("post") and is zero, i.e. the clip's mean level
    after normalisation, so padding carries no information of its own.
    """
    db = db[:n_frames]
    z = (db - db.mean()) / (db.std() + 1e-6)
    out = np.zeros((n_frames, db.shape[1]), np.float32)
    out[:len(z)] = z
    return out


def real_frame_mask(x: np.ndarray) -> np.ndarray:
    """(..., frames) bool: the frames of padded maps ``x`` (..., frames, F) with any non-zero value.

    ``normalize_frames`` pads with all-zero frames, so these are the frames of the clip's sound.
    """
    return np.any(np.asarray(x) != 0, axis=-1)


def n_real_frames(x: np.ndarray) -> int:
    """Length of a padded (frames, n_mels) map up to its last frame with any non-zero band; at least 1.

    That is where the clip's sound ends (:func:`real_frame_mask`).
    """
    return int(np.flatnonzero(real_frame_mask(x)).max(initial=0)) + 1


def real_frames(x: np.ndarray) -> np.ndarray:
    """Every frame of padded clips ``x`` (n, frames, F) with any non-zero value, stacked: (m, F)."""
    return x[real_frame_mask(x)]


def clip_features(y: np.ndarray, cfg: FeatureConfig, n_frames: int | None = None) -> np.ndarray:
    """Model input for one window of audio: (n_frames, n_mels), z-normalised, padded.

    ``n_frames`` defaults to the model's window (``cfg.n_frames``); training on
    shorter excerpts passes their length.
    """
    return normalize_frames(log_mel(y[:cfg.window_samples], cfg), n_frames or cfg.n_frames)


@dataclasses.dataclass(frozen=True)
class MFCCConfig:
    """Parameters of the MFCC front end, on top of the log-Mel's :class:`FeatureConfig`.

    ``delta_order`` 0 keeps the coefficients alone, 1 adds their deltas, 2
    their delta-deltas too; ``delta_width`` is the Savitzky-Golay window in
    frames (librosa.feature.delta's default, 9 frames = 0.29 s).
    """
    n_mfcc: int = 40
    delta_order: int = 2
    delta_width: int = 9

    def __post_init__(self):
        if self.n_mfcc < 1 or self.delta_order not in (0, 1, 2) or self.delta_width < 3 or self.delta_width % 2 == 0:
            raise ValueError(f"MFCC parameters {self.to_dict()}: need n_mfcc >= 1, delta_order 0, 1 or 2, "
                             f"and an odd delta_width >= 3")

    @property
    def n_features(self) -> int:
        """Values per frame: the coefficients and each order of their deltas."""
        return self.n_mfcc * (1 + self.delta_order)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@lru_cache(maxsize=4)
def dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    """(n_mfcc, n_mels) rows of the orthonormal DCT-II, as ``scipy.fft.dct(type=2, norm="ortho")`` (float64)."""
    k, n = np.arange(n_mfcc)[:, None], np.arange(n_mels)[None, :]
    rows = np.sqrt(2.0 / n_mels) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels))
    rows[0] /= np.sqrt(2.0)
    return rows


def savgol_delta(x: np.ndarray, order: int, width: int) -> np.ndarray:
    """The ``order``-th time derivative of ``x`` (frames, coefficients), as ``librosa.feature.delta``.

    That is ``librosa.feature.delta(x.T, width=width, order=order).T``
    (Savitzky-Golay, polynomial of degree ``order``, mode "interp"): each frame
    gets ``order``! times the leading coefficient of the polynomial fitted to
    the ``width`` frames around it, and the first and last ``width // 2``
    frames take their nearest full window's value (the "interp" fit's
    derivative of that degree is constant). librosa refuses a clip shorter
    than the window; here the widest odd window that fits is used, and a clip
    of fewer than 3 frames gets zeros.
    """
    frames = len(x)
    width = min(width, frames if frames % 2 else frames - 1)
    if width < 3:
        return np.zeros_like(x)
    half = width // 2
    vandermonde = np.vander(np.arange(-half, half + 1), order + 1, increasing=True)
    weights = np.linalg.pinv(vandermonde)[order] * math.factorial(order)
    inner = sum(w * x[j:frames - width + 1 + j] for j, w in enumerate(weights))
    return np.concatenate([np.repeat(inner[:1], half, 0), inner, np.repeat(inner[-1:], half, 0)]).astype(x.dtype)


def mfcc_features(y: np.ndarray, cfg: FeatureConfig, params: MFCCConfig) -> np.ndarray:
    """Model input for one window of audio: (cfg.n_frames, params.n_features) MFCCs and deltas, zero-padded.

    The coefficients are the DCT of :func:`log_mel` (dB relative to the
    clip's loudest bin, so already independent of the recording's gain), not
    of the z-normalised map the log-Mel models see: the model standardises
    them itself. See :func:`mfcc_of_log_mel`.
    """
    return mfcc_of_log_mel(log_mel(y[:cfg.window_samples], cfg), cfg, params)


def mfcc_of_log_mel(db: np.ndarray, cfg: FeatureConfig, params: MFCCConfig) -> np.ndarray:
    """:func:`mfcc_features` from the window's :func:`log_mel` map ``db``.

    Deltas are taken over the clip's real frames, then every value of a
    padding frame is zero, as in the log-Mel input.
    """
    db = db[:cfg.n_frames].astype(np.float64)
    coefficients = db @ dct_matrix(cfg.n_mels, params.n_mfcc).T
    parts = [coefficients] + [savgol_delta(coefficients, k, params.delta_width)
                              for k in range(1, params.delta_order + 1)]
    out = np.zeros((cfg.n_frames, params.n_features), np.float32)
    out[:len(db)] = np.concatenate(parts, axis=1)
    return out


def mfcc_matrices(n_real: int, cfg: FeatureConfig, params: MFCCConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`mfcc_of_log_mel` of a map of ``n_real`` frames as matrices: the DCT and one delta operator per order.

    Returns ``dct`` (n_mels, n_mfcc) and ``deltas``, (n_real, n_real) each, with
    ``mfcc_of_log_mel(db)[:n_real] == concat([C] + [D @ C for D in deltas], axis=1)``
    for ``C = db @ dct``: both steps are linear in the dB map, so gradients
    can be taken through them (explanations of MFCC models over log-Mel bins).
    """
    return (dct_matrix(cfg.n_mels, params.n_mfcc).T,
            [savgol_delta(np.eye(n_real), k, params.delta_width) for k in range(1, params.delta_order + 1)])


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Short hash of the code that decodes, caches and featurises audio (core/audio.py, core/dataset.py, this file).

    Part of every cache folder's name (:class:`FeatureCache`), so arrays
    cached by other code, an earlier release or an edit since, are never read
    back as this code's (README: "Training time": float16 audio cached by an
    earlier release gave other PCEN maps than a fresh decode).
    """
    here = Path(__file__).resolve().parent
    return hashlib.sha1(b"".join((here / name).read_bytes()
                                 for name in ("audio.py", "dataset.py", "features.py"))).hexdigest()[:8]


class FeatureCache:
    """Arrays on disk keyed by (kind, parameters, file content hash), for this code (:func:`code_fingerprint`).

    Files are plain ``.npy`` loaded with ``allow_pickle=False`` and written
    through a temporary name, so a crash never leaves a half-written entry.
    """

    def __init__(self, root):
        self.root = Path(root)

    def folder(self, kind: str, params_key: str) -> Path:
        """Where the arrays of ``kind`` computed with parameters ``params_key`` by this code lie."""
        return self.root / kind / f"{params_key}-{code_fingerprint()}"

    def _path(self, kind: str, params_key: str, content_hash: str) -> Path:
        return self.folder(kind, params_key) / content_hash[:2] / f"{content_hash}.npy"

    def get(self, kind: str, params_key: str, content_hash: str) -> np.ndarray | None:
        p = self._path(kind, params_key, content_hash)
        if not p.exists():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError):   # a damaged entry is recomputed, not trusted
            return None

    def put(self, kind: str, params_key: str, content_hash: str, array: np.ndarray) -> None:
        p = self._path(kind, params_key, content_hash)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, p)


def file_hash(path) -> str:
    """SHA-1 of a file's bytes (the cache key and the duplicate key of a clip)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
