"""Listenable explanations: a mask over the log-Mel window, applied to the STFT and resynthesised.

After Paissan et al., "Listenable Maps for Audio Classifiers" (L-MAC, ICML 2024): the mask
multiplies the magnitude spectrogram, the ORIGINAL phase is kept, and the inverse STFT gives
the audio of "what the model listened to". Here the mask lives on the model's mel bands,
so it is first mapped to linear STFT bins with the same mel filterbank the features use
(``features.mel_filterbank`` or ``librosa.filters.mel``: (n_mels, 1 + n_fft // 2)).

The STFT framing is the features' (``features.log_mel``): centred frames with zero padding,
periodic Hann window, ``n_fft``/``hop_length``, so mask frame t is STFT frame t.
Numpy (the STFT and its inverse, equal to ``librosa.stft`` / ``librosa.istft``: importing
librosa's spectrum module takes ~2 s here, more than resynthesising every mask of an
explanation) + soundfile (writing); no TensorFlow.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .features import frame_centred, hann_window, mel_filterbank
from .reports import atomic_write


def mel_mask_to_stft(mask_mel: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
    """Map a mel-domain mask (frames, n_mels) to linear STFT bins (frames, n_bins).

    Each STFT bin k takes the filterbank-weighted average of the masks of the mel bands
    covering it: ``M_lin[t, k] = sum_b F[b, k] M[t, b] / sum_b F[b, k]``, i.e.
    ``M_lin = (M @ F) / (1^T F)``. Between two band centres this interpolates the two bands'
    values (the triangles overlap), so a mask of all ones maps to all ones and values stay
    within the mel mask's range. Bins no filter covers (0 Hz and Nyquist for the Slaney
    filterbank) take the value of the nearest band, measured from each band's peak bin;
    all-zero filters (possible for many narrow bands) are ignored.
    """
    m = np.asarray(mask_mel, np.float64)
    f = np.asarray(filterbank, np.float64)
    if m.ndim != 2 or f.ndim != 2 or m.shape[1] != f.shape[0]:
        raise ValueError(f"mask (frames, n_mels) {m.shape} does not fit filterbank (n_mels, n_bins) {f.shape}")
    weight = f.sum(axis=0)                                       # (n_bins,)
    out = np.empty((m.shape[0], f.shape[1]), np.float64)
    covered = weight > 0
    out[:, covered] = (m @ f[:, covered]) / weight[covered]
    if not np.all(covered):
        live = np.flatnonzero(f.max(axis=1) > 0)
        if live.size == 0:
            raise ValueError("filterbank has no non-zero filter")
        peaks = f[live].argmax(axis=1)                           # peak bin of each live band
        bins = np.flatnonzero(~covered)
        nearest = live[np.abs(bins[:, None] - peaks[None, :]).argmin(axis=1)]
        out[:, bins] = m[:, nearest]
    return out.astype(np.float32)


def _fit_frames(mask: np.ndarray, n_frames: int, beyond: str) -> np.ndarray:
    """Truncate or extend a (frames, bins) mask to ``n_frames`` STFT frames."""
    if len(mask) >= n_frames:
        return mask[:n_frames]
    if beyond == "zero" or len(mask) == 0:
        fill = np.zeros((n_frames - len(mask), mask.shape[1]), mask.dtype)
    elif beyond == "last":
        fill = np.repeat(mask[-1:], n_frames - len(mask), axis=0)
    else:
        raise ValueError(f"beyond must be 'zero' or 'last', got {beyond!r}")
    return np.concatenate([mask, fill])


def stft(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """(frames, 1 + n_fft // 2) complex STFT of ``y`` as ``librosa.stft(y, n_fft=n_fft, hop_length=hop_length,
    pad_mode="constant").T``: frame t centred on sample t * hop_length, zero padding, periodic Hann window."""
    return np.fft.rfft(frame_centred(np.asarray(y, np.float64), n_fft, hop_length) * hann_window(n_fft), axis=1)


def istft(spectrum: np.ndarray, n_fft: int, hop_length: int, length: int) -> np.ndarray:
    """``length`` samples from an STFT (frames, bins) as :func:`stft` frames it, as ``librosa.istft``:
    windowed inverse frames overlap-added and divided by the summed squared window where that is not ~0."""
    window = hann_window(n_fft).astype(np.float64)
    pieces = np.fft.irfft(spectrum, n=n_fft, axis=1) * window
    total = n_fft + hop_length * (len(pieces) - 1)
    out, weight = np.zeros(total), np.zeros(total)
    for t, piece in enumerate(pieces):
        out[t * hop_length:t * hop_length + n_fft] += piece
        weight[t * hop_length:t * hop_length + n_fft] += window ** 2
    nonzero = weight > np.finfo(np.float64).tiny
    out[nonzero] /= weight[nonzero]
    out = out[n_fft // 2:n_fft // 2 + length]
    return np.pad(out, (0, length - len(out)))


def reconstruct(y: np.ndarray, mask_mel: np.ndarray, sr: int = 16000, n_fft: int = 1024,
                hop_length: int = 512, filterbank: np.ndarray | None = None,
                beyond: str = "zero") -> np.ndarray:
    """Audio of ``y`` with its magnitude spectrogram masked by ``mask_mel`` (frames, n_mels).

    :func:`stft` (centred, zero padding, periodic Hann), magnitude times
    ``mel_mask_to_stft(mask_mel, filterbank)`` with the mask clipped to [0, 1], ORIGINAL phase
    kept (so multiplying the complex STFT by the real mask), :func:`istft` back to ``len(y)``
    samples (float32).

    Frames: the mask's frame t is STFT frame t. Mask frames past the STFT's (the model
    window's zero-padding region) are dropped. STFT frames past the mask's end (audio longer
    than the model window, which the model never saw) get ``beyond="zero"`` (default: silenced,
    they are not part of the explanation) or ``"last"`` (the mask's last frame repeated).
    ``filterbank=None`` builds ``features.mel_filterbank(sr, n_fft, mask's mels)``, the
    features' Slaney filterbank (``librosa.filters.mel``'s); otherwise ``sr`` is unused.
    """
    y = np.asarray(y, np.float32)
    if y.ndim != 1:
        raise ValueError(f"y must be mono (samples,), got shape {y.shape}")
    m = np.asarray(mask_mel, np.float32)
    if m.ndim != 2:
        raise ValueError(f"mask_mel must be (frames, n_mels), got shape {m.shape}")
    if filterbank is None:
        filterbank = mel_filterbank(sr, n_fft, m.shape[1])
    if np.asarray(filterbank).shape[1] != 1 + n_fft // 2:
        raise ValueError(f"filterbank has {np.asarray(filterbank).shape[1]} bins, n_fft {n_fft} needs {1 + n_fft // 2}")
    if len(y) == 0:
        return y.copy()
    spectrum = stft(y, n_fft, hop_length)                         # (n_stft_frames, n_bins)
    lin = np.clip(mel_mask_to_stft(m, filterbank), 0.0, 1.0)     # (frames, n_bins)
    lin = _fit_frames(lin, len(spectrum), beyond)
    return istft(spectrum * lin, n_fft, hop_length, len(y)).astype(np.float32)


def write_wav_atomic(path, y: np.ndarray, sr: int) -> Path:
    """Write mono/multichannel float audio as 16-bit PCM WAV via a temp file + ``os.replace``.

    Samples are clipped to [-1, 1] first (libsndfile would otherwise wrap on overflow).
    The temp file lives in the target folder, so the replace is atomic on one filesystem and
    readers never see a half-written file. Parent folders are created.
    """
    import soundfile as sf

    path = Path(path)
    data = np.clip(np.asarray(y, np.float32), -1.0, 1.0)
    wav = io.BytesIO()
    sf.write(wav, data, int(sr), subtype="PCM_16", format="WAV")
    atomic_write(path, wav.getvalue())
    return path
