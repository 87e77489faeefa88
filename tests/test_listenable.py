"""Mel masks mapped to STFT bins and resynthesised; atomic WAV writing."""
import librosa
import numpy as np
import pytest
import soundfile as sf

from core import listenable

SR, N_FFT, HOP, N_MELS = 16000, 1024, 512, 128
FB = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS)
CENTRES = librosa.mel_frequencies(N_MELS + 2, fmin=0.0, fmax=SR / 2)[1:-1]   # band centres, Hz
BIN_HZ = np.fft.rfftfreq(N_FFT, 1.0 / SR)


def band_mask(frames, lo_hz, hi_hz):
    m = np.zeros((frames, N_MELS), np.float32)
    m[:, (CENTRES >= lo_hz) & (CENTRES <= hi_hz)] = 1.0
    return m


def test_all_ones_maps_to_all_ones():
    lin = listenable.mel_mask_to_stft(np.ones((7, N_MELS)), FB)
    assert lin.shape == (7, 1 + N_FFT // 2)
    np.testing.assert_allclose(lin, 1.0, atol=1e-6)
    # the zero-weight bins (0 Hz, Nyquist) take the nearest band's value
    ramp = np.tile(np.linspace(0, 1, N_MELS), (2, 1))
    lin = listenable.mel_mask_to_stft(ramp, FB)
    assert lin[0, 0] == pytest.approx(0.0) and lin[0, -1] == pytest.approx(1.0)
    assert np.all(np.diff(lin[0]) >= -1e-6)           # a rising mel ramp stays rising


def test_band_mask_1_to_2_khz():
    lin = listenable.mel_mask_to_stft(band_mask(3, 1000, 2000), FB)[0]
    inside = (BIN_HZ >= 1100) & (BIN_HZ <= 1900)
    far = (BIN_HZ <= 800) | (BIN_HZ >= 2300)
    assert np.all(lin[inside] > 0.99)
    assert np.all(lin[far] < 1e-6)
    assert np.all((lin >= 0) & (lin <= 1))


def test_mask_shape_is_checked():
    with pytest.raises(ValueError):
        listenable.mel_mask_to_stft(np.ones((4, 64)), FB)


def two_tone(seconds=1.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * 500 * t) + 0.4 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)


def n_frames(y):
    return 1 + len(y) // HOP


def test_all_ones_reconstructs_the_signal():
    y = two_tone(0.73)
    out = listenable.reconstruct(y, np.ones((n_frames(y), N_MELS)), SR, N_FFT, HOP, FB)
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.max(np.abs(out - y)) < 1e-4
    # a mask longer than the audio (the model window's padding frames) is cut to the audio
    out = listenable.reconstruct(y, np.ones((500, N_MELS)), SR, N_FFT, HOP, FB)
    assert np.max(np.abs(out - y)) < 1e-4
    # filterbank=None builds the same librosa filterbank
    out = listenable.reconstruct(y, np.ones((500, N_MELS)), SR, N_FFT, HOP)
    assert np.max(np.abs(out - y)) < 1e-4


def test_all_zeros_is_silence():
    y = two_tone(0.5)
    out = listenable.reconstruct(y, np.zeros((n_frames(y), N_MELS)), SR, N_FFT, HOP, FB)
    assert np.max(np.abs(out)) < 1e-7


def tone_energy(y, hz):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1.0 / SR)
    return spec[np.abs(freqs - hz) <= 20].sum()


def test_band_mask_keeps_500_hz_and_removes_3_khz():
    y = two_tone(1.0)
    out = listenable.reconstruct(y, band_mask(n_frames(y), 300, 700), SR, N_FFT, HOP, FB)
    assert tone_energy(out, 500) > 0.9 * tone_energy(y, 500)
    assert tone_energy(out, 3000) < 0.1 * tone_energy(y, 3000)


def test_frames_beyond_the_mask():
    y = two_tone(1.0)
    short = np.ones((10, N_MELS), np.float32)                  # covers ~0.32 s
    zero = listenable.reconstruct(y, short, SR, N_FFT, HOP, FB)
    last = listenable.reconstruct(y, short, SR, N_FFT, HOP, FB, beyond="last")
    assert np.max(np.abs(zero[:8 * HOP] - y[:8 * HOP])) < 1e-4
    assert np.max(np.abs(zero[12 * HOP:])) < 1e-7
    assert np.max(np.abs(last - y)) < 1e-4
    with pytest.raises(ValueError):
        listenable.reconstruct(y, short, SR, N_FFT, HOP, FB, beyond="edge")


def test_stft_and_istft_are_librosas():
    y = two_tone(0.61) * np.random.default_rng(0).uniform(0.5, 1.0, int(0.61 * SR)).astype(np.float32)
    ours = listenable.stft(y, N_FFT, HOP)
    theirs = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, pad_mode="constant").T
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=2e-4 * np.abs(theirs).max())
    masked = theirs * np.random.default_rng(1).random(theirs.shape)
    np.testing.assert_allclose(listenable.istft(masked, N_FFT, HOP, len(y)),
                               librosa.istft(masked.T, n_fft=N_FFT, hop_length=HOP, length=len(y)), atol=1e-5)
    # a length past the frames' end is zero-padded, as librosa's
    np.testing.assert_allclose(listenable.istft(masked, N_FFT, HOP, len(y) + 2000),
                               librosa.istft(masked.T, n_fft=N_FFT, hop_length=HOP, length=len(y) + 2000), atol=1e-5)


def test_write_wav_atomic(tmp_path):
    y = two_tone(0.25) * 3.0                                      # clips to [-1, 1]
    path = listenable.write_wav_atomic(tmp_path / "sub" / "expl.wav", y, SR)
    data, sr = sf.read(str(path), dtype="float32")
    info = sf.info(str(path))
    assert sr == SR and info.subtype == "PCM_16" and len(data) == len(y)
    np.testing.assert_allclose(data, np.clip(y, -1, 1), atol=1 / 16384)
    assert [p.name for p in path.parent.iterdir()] == ["expl.wav"]  # no temp file left
    listenable.write_wav_atomic(path, np.zeros(10), SR)                # replaces
    assert sf.info(str(path)).frames == 10
