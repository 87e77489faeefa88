"""Log-Mel features, the analysis windows that cut long recordings, and the on-disk cache.

One front end (librosa, Slaney mel, centred frames) serves training and
inference alike; its parameters live in :class:`FeatureConfig`, which is
saved in every model's ``config.json`` and read back by every predictor.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from audio import check_clip, stream_audio

FEATURE_VERSION = 1  # bump when the meaning of the features changes, so old models are refused


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the log-Mel front end (the design fixes the defaults)."""
    sr: int = 16000
    n_mels: int = 128
    n_fft: int = 1024
    hop_length: int = 512
    n_frames: int = 500
    top_db: float = 80.0
    version: int = FEATURE_VERSION

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


def log_mel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-Mel spectrogram of ``y``, shape (frames, n_mels), in dB (float32).

    Signals shorter than ``n_fft`` are zero-padded to one FFT frame first, so a
    short click still yields a well-defined spectrum.
    """
    import librosa
    if len(y) < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - len(y)))
    mel = librosa.feature.melspectrogram(y=y, sr=cfg.sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                         n_mels=cfg.n_mels, power=2.0)
    return librosa.power_to_db(mel, ref=np.max, top_db=cfg.top_db).T.astype(np.float32)


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


def clip_features(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Model input for one window of audio: (n_frames, n_mels), z-normalised, padded."""
    return normalize_frames(log_mel(y[:cfg.window_samples], cfg), cfg.n_frames)


def iter_windows(path, cfg: FeatureConfig, window_seconds: float | None = None,
                 hop_seconds: float | None = None) -> Iterator[tuple[float, float, np.ndarray]]:
    """Yield (start_s, end_s, audio) analysis windows of a recording of any length.

    Windows are ``window_seconds`` long (default: the model's 500-frame span) and
    start every ``hop_seconds`` (default: half a window); the last one reaches
    the end of the file. Audio is streamed, so memory stays bounded by one
    window plus one read block even for an hour-long file.
    """
    window = int(round((window_seconds or cfg.window_seconds) * cfg.sr))
    hop = int(round((hop_seconds or (window / cfg.sr) / 2) * cfg.sr))
    if not 0 < hop:
        raise ValueError("hop must be positive")
    buffer, offset = np.zeros(0, np.float32), 0   # offset: file sample index of buffer[0]
    next_start, covered, total = 0, 0, 0           # covered: end of the last window yielded
    for block in stream_audio(path, cfg.sr, block_seconds=max(window, hop) / cfg.sr):
        buffer = np.concatenate([buffer, block])
        total += len(block)
        while next_start + window <= total and covered < total:
            a = next_start - offset
            yield next_start / cfg.sr, (next_start + window) / cfg.sr, buffer[a:a + window]
            covered, next_start = next_start + window, next_start + hop
        drop = min(len(buffer), max(0, next_start - offset))
        buffer, offset = buffer[drop:], offset + drop
    if covered == 0:                       # the whole file is shorter than one window
        check_clip(buffer, cfg.sr, path)
        yield 0.0, total / cfg.sr, buffer
    elif covered < total and next_start < total:   # a last, shorter window reaches the end
        yield next_start / cfg.sr, total / cfg.sr, buffer[next_start - offset:]


class FeatureCache:
    """Arrays on disk keyed by (kind, parameters, file content hash).

    Files are plain ``.npy`` loaded with ``allow_pickle=False`` and written
    through a temporary name, so a crash never leaves a half-written entry.
    """

    def __init__(self, root):
        self.root = Path(root)

    def _path(self, kind: str, params_key: str, content_hash: str) -> Path:
        return self.root / kind / params_key / content_hash[:2] / f"{content_hash}.npy"

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
