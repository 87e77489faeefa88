"""Robust audio input and noise mixing.

Every reader in the toolkit goes through :func:`stream_audio`, which turns any
file soundfile (or, as a fallback, librosa/audioread) can decode into mono
float32 blocks at the target rate, without holding more than one block of a
long recording in memory.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np


AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".m4a", ".aac", ".opus"}
STRAY_NAMES = {".ds_store", "desktop.ini", "thumbs.db"}
MIN_SECONDS = 0.1       # below this a clip holds less than two STFT frames of sound
SILENCE_PEAK = 1e-4     # peak amplitude under which a clip counts as silent (-80 dBFS)


def warn(message: str) -> None:
    """Print a one-line warning to stderr (the toolkit's single voice for recoverable problems)."""
    print(f"warning: {message}", file=sys.stderr)


class AudioError(ValueError):
    """A file that cannot be used as audio; ``str()`` is one line naming the file."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def is_stray(path: Path) -> bool:
    """True for files a dataset folder collects that are never audio (.DS_Store, desktop.ini, ._x)."""
    name = path.name.lower()
    return name in STRAY_NAMES or name.startswith("._")


def is_audio_file(path: Path) -> bool:
    """True when ``path`` has an extension the loader accepts (any case)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not is_stray(path)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(path, f"unsupported extension '{path.suffix}' "
                               f"(supported: {' '.join(sorted(AUDIO_EXTENSIONS))})")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _warn_if_truncated(path: Path, f) -> None:
    """Warn when a WAV header promises more audio than the file holds (a cut-off copy or download).

    libsndfile then decodes what is there and logs ``data : <declared> (should be <present>)``;
    0xFFFFFFFF is the placeholder size streaming recorders write, not a truncation.
    """
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", f.extra_info, re.MULTILINE)
    if not m:
        return
    declared, present = int(m.group(1)), int(m.group(2))
    if present < declared and declared != 0xFFFFFFFF:
        warn(f"{path}: truncated (header declares {declared} bytes of audio, the file holds {present}); "
             f"using the {f.frames / f.samplerate:.2f} s present")


_STDERR = threading.Lock()   # one redirection of file descriptor 2 at a time, or a second would keep the first's


@contextlib.contextmanager
def decoder_notes(path: Path):
    """Turn what a C decoder prints to stderr while the block runs into one warning line naming ``path``.

    libsndfile's MP3 decoder (libmpg123) writes its notes straight to file
    descriptor 2, e.g. three lines without a file name when a WAV's chunk
    after the MP3 data is read as a damaged frame (the audio is whole). While
    the block runs, descriptor 2 is a temporary file; anything another thread
    writes to stderr then lands in the warning too, so only decoding that
    prints such notes should run inside.
    """
    with _STDERR, tempfile.TemporaryFile() as notes:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(notes.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        notes.seek(0)
        lines = [line.strip() for line in notes.read().decode(errors="replace").splitlines() if line.strip()]
    if lines:
        warn(f"{path}: the MP3 decoder says: {' '.join(lines)}")


def _native_blocks(path: Path, block_frames_at_sr, sr: int) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block, native rate). soundfile first; librosa/audioread for the rest."""
    import soundfile as sf
    try:
        f = sf.SoundFile(str(path))
    except Exception as sf_error:  # libsndfile cannot parse it: try ffmpeg/audioread via librosa
        try:
            import librosa
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y, native = librosa.load(str(path), sr=None, mono=True)
        except Exception:
            reason = str(sf_error).split(":")[-1].strip() or "unknown format"
            raise AudioError(path, f"not readable as audio ({reason})") from None
        yield y.astype(np.float32), int(native)
        return
    with f:
        native = int(f.samplerate)
        _warn_if_truncated(path, f)
        block = max(1, int(block_frames_at_sr * native / sr))
        # 16-bit PCM, what most recorders write, is read as integers and scaled here: the same floats as
        # libsndfile's float read (x / 32768), which converted 7 times slower.
        dtype = "int16" if f.subtype == "PCM_16" else "float32"
        notes = (lambda: decoder_notes(path)) if f.subtype.startswith("MPEG") else contextlib.nullcontext
        while True:
            try:
                with notes():
                    data = f.read(block, dtype=dtype, always_2d=True)
            except Exception as e:  # truncated or corrupt payload mid-file
                raise AudioError(path, f"corrupt audio data ({e})") from None
            if len(data) == 0:
                return
            yield _mono_float32(data), native


def _mono_float32(frames: np.ndarray) -> np.ndarray:
    """Mean over the channels of (frames, channels) float32, or int16 read as x / 32768."""
    if frames.dtype == np.int16:
        frames = frames * np.float32(1 / 32768)
    return frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)


def stream_audio(path, sr: int = 16000, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield successive mono float32 blocks of ``path`` resampled to ``sr``.

    Memory stays bounded by ``block_seconds`` whatever the file's length, so an
    hour-long field recording streams like a 2 s clip. Resampling is soxr's
    streaming resampler, so block edges leave no seams.

    Raises
    ------
    AudioError
        Missing, empty, non-audio or unsupported files, with a one-line reason.
    """
    import soxr
    path = Path(path)
    _check_path(path)
    resampler = None
    for block, native in _native_blocks(path, int(block_seconds * sr), sr):
        if native == sr:
            yield block
            continue
        if resampler is None:
            resampler = soxr.ResampleStream(native, sr, 1, dtype="float32", quality="HQ")
        yield resampler.resample_chunk(block, last=False)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail


def load_audio(path, sr: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Load ``path`` as a mono float32 signal at ``sr`` Hz, at most ``max_seconds`` long.

    Rejects, with :class:`AudioError`, files with no samples, clips shorter than
    ``MIN_SECONDS`` and clips that are silent (peak below ``SILENCE_PEAK``):
    none of them carries a sound to learn from or classify.
    """
    limit = None if max_seconds is None else int(max_seconds * sr)
    block_seconds = 30.0 if max_seconds is None else min(30.0, max_seconds + 0.5)
    parts, n = [], 0
    for block in stream_audio(path, sr, block_seconds):
        parts.append(block)
        n += len(block)
        if limit is not None and n >= limit:
            break
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if limit is not None:
        y = y[:limit]
    check_clip(y, sr, path)
    return y


def check_clip(y: np.ndarray, sr: int, path) -> None:
    """Raise :class:`AudioError` unless ``y`` is long enough and not silent."""
    if len(y) == 0:
        raise AudioError(path, "contains no audio samples")
    if len(y) < MIN_SECONDS * sr:
        raise AudioError(path, f"too short ({1000 * len(y) / sr:.0f} ms; at least "
                               f"{1000 * MIN_SECONDS:.0f} ms is needed)")
    if not np.all(np.isfinite(y)):
        raise AudioError(path, "contains NaN or infinite samples")
    if np.max(np.abs(y)) < SILENCE_PEAK:
        raise AudioError(path, "silent (peak below -80 dBFS)")


# ---------------------------------------------------------------- mixing

def active_power(y: np.ndarray, top_db: float = 30.0, frame_length: int = 1024, hop_length: int = 256) -> float:
    """Mean power of the non-silent part of ``y``.

    The active part is what ``librosa.effects.split(y, top_db=top_db,
    frame_length=frame_length, hop_length=hop_length)`` keeps: the hops of the
    centred, zero-padded frames whose RMS is within ``top_db`` of the loudest
    frame's, so a short call inside a long quiet clip is measured by the call,
    not diluted by the silence around it. Computed here in numpy, the same
    frames as librosa's and the same clips kept (tested): importing librosa's
    effects module takes ~2 s, and every training run with wind mixing and
    every robustness run paid it. A frame's energy is the sum of its hops'
    (``frame_length`` a multiple of ``hop_length``), so each sample is squared
    once, not once for each of the frames that hold it: half the time.
    """
    y = np.asarray(y)
    if frame_length % hop_length:
        raise ValueError(f"frame_length {frame_length} is not a multiple of hop_length {hop_length}")
    half, n_frames = frame_length // 2, len(y) // hop_length + 1   # librosa's centred frames
    padded = np.zeros(half + n_frames * hop_length + half, np.float32)
    padded[half:half + len(y)] = y
    hops = np.square(padded).reshape(-1, hop_length).sum(axis=1, dtype=np.float64)
    running = np.concatenate([[0.0], np.cumsum(hops)])
    per_frame = frame_length // hop_length
    power = (running[per_frame:per_frame + n_frames] - running[:n_frames]) / frame_length   # librosa: mean square
    db = 10 * np.log10(np.maximum(1e-10, power)) - 10 * np.log10(np.maximum(1e-10, power.max()))
    active = y[np.repeat(db > -top_db, hop_length)[:len(y)]]   # a frame's hop of samples, as split's intervals
    return float(np.mean(active ** 2)) if active.size else float(np.mean(y ** 2))


def fit_noise(noise: np.ndarray, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Return ``n`` samples of ``noise``: a random excerpt, looped when the noise is shorter."""
    if len(noise) == 0:
        raise ValueError("noise has no samples")
    if len(noise) < n:
        noise = np.tile(noise, int(np.ceil(n / len(noise))) + 1)
    start = 0 if rng is None else int(rng.integers(0, len(noise) - n + 1))
    return noise[start:start + n]


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float,
               rng: np.random.Generator | None = None, active_only: bool = True) -> np.ndarray:
    """Mix ``noise`` into ``signal`` so that the signal-to-noise ratio is ``snr_db``.

    Signal power is measured on the signal's active part (``active_only=True``)
    or over the whole clip (``active_only=False``, the naive scheme); noise
    power over the excerpt actually added. Noise of any level works: a quiet
    recording is scaled up, a short one looped. If the mixture would clip, the
    whole mixture is scaled down, which leaves the SNR unchanged.
    """
    signal = np.asarray(signal, np.float32)
    segment = fit_noise(np.asarray(noise, np.float32), len(signal), rng).astype(np.float64)
    p_noise = float(np.mean(segment ** 2))
    if p_noise <= 0:
        raise ValueError("noise is silent: cannot reach a finite SNR")
    p_signal = active_power(signal) if active_only else float(np.mean(signal.astype(np.float64) ** 2))
    gain = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    mixed = signal + gain * segment
    peak = np.max(np.abs(mixed))
    if peak > 1.0:
        mixed /= peak
    return mixed.astype(np.float32)


WIND_CORNERS_HZ = (50.0, 2000.0)   # synthetic winds' low-pass corners: from rumble on a microphone to leaves


def synthetic_wind(n: int, sr: int = 16000, rng: np.random.Generator | None = None,
                   corner_hz: tuple[float, float] = WIND_CORNERS_HZ) -> np.ndarray:
    """Wind-like noise of a random colour, with slow random gusts; peak-normalised float32.

    White noise through a first- or second-order Butterworth low-pass (at
    random) whose corner is log-uniform in ``corner_hz``: real wind ranges from
    the rumble of wind on a microphone (most power below 100 Hz) to the rush of
    wind in leaves (power up to about 1 kHz), and a model that heard only a few
    recordings learns their colour, not wind. The level follows ``exp(d g(t))``:
    ``g`` a standard normal draw every second, linearly interpolated, ``d``
    uniform in [0, 1] (steady to gusty).
    """
    from scipy.signal import butter, sosfilt   # scipy.signal is slow to import; only training needs it

    rng = rng if rng is not None else np.random.default_rng(0)
    corner = float(np.exp(rng.uniform(np.log(corner_hz[0]), np.log(corner_hz[1]))))
    lowpass = butter(int(rng.integers(1, 3)), min(corner, 0.45 * sr), "lowpass", fs=sr, output="sos")
    n_gusts = max(2, int(n / sr))
    gust = np.exp(rng.uniform(0.0, 1.0) * np.interp(np.arange(n), np.linspace(0, n, n_gusts),
                                                     rng.standard_normal(n_gusts)))
    y = sosfilt(lowpass, rng.standard_normal(n)) * gust
    return (y / (np.max(np.abs(y)) + 1e-12)).astype(np.float32)


def load_noise_bank(noise_dir, sr: int = 16000, max_seconds: float = 120.0) -> list[np.ndarray]:
    """Load every readable recording in ``noise_dir``; fall back to synthetic wind with a warning."""
    noise_dir = Path(noise_dir)
    files = sorted(p for p in noise_dir.glob("*") if is_audio_file(p)) if noise_dir.is_dir() else []
    bank = []
    for p in files:
        try:
            bank.append(load_audio(p, sr, max_seconds))
        except AudioError as e:
            warn(f"skipping noise file {e}")
    if not bank:
        warn(f"no wind recordings in {noise_dir}; using synthetic wind "
             f"(run download_data.py --noise-source DIR to add real ones)")
        rng = np.random.default_rng(0)
        bank = [synthetic_wind(10 * sr, sr, rng) for _ in range(4)]
    return bank
