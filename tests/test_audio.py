"""Audio input and noise mixing: SNR calibration, synthetic wind, the noise bank, refused inputs."""
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import BAD_INPUTS, tone, write_bad_inputs, write_truncated_wav, write_wav

from core.audio import (AudioError, active_power, decoder_notes, fit_noise, load_audio, load_noise_bank, mix_at_snr,
                        stream_audio, synthetic_wind)

SR = 16000


def call_in_silence(seconds_before=0.5, call=1.0, seconds_after=0.5) -> np.ndarray:
    """A 'moo' surrounded by silence: whole-clip and active-part power differ by ~3 dB."""
    silence = np.zeros(int(seconds_before * SR), np.float32)
    return np.concatenate([silence, tone("moo", call), np.zeros(int(seconds_after * SR), np.float32)])


def noise_at(dbfs: float, seconds: float, seed: int = 0) -> np.ndarray:
    """White noise with an RMS level of ``dbfs``."""
    return (10 ** (dbfs / 20) * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def measured_snr(signal, noise, mixed, active_only=True) -> float:
    """SNR of ``mixed`` read back by least squares as a*signal + b*noise_excerpt (exact even after rescaling)."""
    segment = fit_noise(noise, len(signal)).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(np.stack([signal, segment], axis=1), mixed.astype(np.float64), rcond=None)
    p_signal = active_power(signal) if active_only else float(np.mean(signal.astype(np.float64) ** 2))
    return 10 * np.log10(a ** 2 * p_signal / (b ** 2 * np.mean(segment ** 2)))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
@pytest.mark.parametrize("noise_dbfs", [-20.0, -58.0])
def test_mix_at_snr_hits_target_on_active_part(snr_db, noise_dbfs):
    signal, noise = call_in_silence(), noise_at(noise_dbfs, 3.0)
    mixed = mix_at_snr(signal, noise, snr_db)
    assert mixed.dtype == np.float32 and mixed.shape == signal.shape
    assert abs(measured_snr(signal, noise, mixed) - snr_db) < 0.1


def test_mix_at_snr_loops_a_short_noise():
    signal, noise = call_in_silence(), noise_at(-30.0, 0.3)
    mixed = mix_at_snr(signal, noise, 5.0)
    added = mixed.astype(np.float64) - signal
    n = len(noise)
    np.testing.assert_allclose(added[n:2 * n], added[:n], atol=1e-6)   # the excerpt repeats: looped
    assert abs(measured_snr(signal, noise, mixed) - 5.0) < 0.1


def test_mix_at_snr_whole_clip_variant():
    signal, noise = call_in_silence(), noise_at(-30.0, 3.0)
    naive = mix_at_snr(signal, noise, 10.0, active_only=False)
    assert abs(measured_snr(signal, noise, naive, active_only=False) - 10.0) < 0.1
    # measured on the call itself, the naive mix is cleaner than asked: silence diluted the signal power
    assert measured_snr(signal, noise, naive) > 11.0


def test_mix_at_snr_rescales_instead_of_clipping():
    signal = 0.99 * tone("moo", 1.0) / np.max(np.abs(tone("moo", 1.0)))
    noise = noise_at(-3.0, 1.0)
    mixed = mix_at_snr(signal, noise, -5.0)
    assert np.max(np.abs(mixed)) <= 1.0
    assert abs(measured_snr(signal, noise, mixed) - (-5.0)) < 0.1


def test_mix_at_snr_random_excerpt_and_silent_noise():
    signal, noise = call_in_silence(), noise_at(-30.0, 5.0)
    a = mix_at_snr(signal, noise, 0.0, rng=np.random.default_rng(1))
    b = mix_at_snr(signal, noise, 0.0, rng=np.random.default_rng(2))
    assert not np.allclose(a, b)               # different excerpts of the same recording
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(signal, np.zeros(100, np.float32), 0.0)


def low_share(y: np.ndarray, below_hz: float) -> float:
    """Share of ``y``'s power below ``below_hz``."""
    power = np.abs(np.fft.rfft(y)) ** 2
    return float(power[np.fft.rfftfreq(len(y), 1 / SR) < below_hz].sum() / power.sum())


def test_synthetic_wind_is_normalised_low_passed_noise_of_a_random_colour():
    wind = synthetic_wind(3 * SR, SR, np.random.default_rng(3))
    assert wind.shape == (3 * SR,) and wind.dtype == np.float32
    assert np.max(np.abs(wind)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(wind, synthetic_wind(3 * SR, SR, np.random.default_rng(3)))
    rumble = synthetic_wind(3 * SR, SR, np.random.default_rng(3), corner_hz=(60.0, 60.0))
    assert low_share(rumble, 500.0) > 0.9                          # a 60 Hz corner: wind rumbles, it does not hiss
    rng = np.random.default_rng(4)
    shares = [low_share(synthetic_wind(3 * SR, SR, rng), 500.0) for _ in range(20)]
    assert min(shares) < 0.5 < 0.9 < max(shares)                   # every draw its own colour, rumble to rush


def test_load_noise_bank_falls_back_to_synthetic_wind(tmp_path, capsys):
    empty = tmp_path / "wind"
    empty.mkdir()
    bank = load_noise_bank(empty)
    err = capsys.readouterr().err
    assert f"no wind recordings in {empty}" in err and "synthetic wind" in err
    assert len(bank) == 4 and all(len(b) == 10 * SR for b in bank)


def test_load_noise_bank_skips_unreadable_files(tmp_path, capsys):
    folder = tmp_path / "wind"
    write_wav(folder / "gust.wav", noise_at(-20.0, 1.0))
    (folder / "broken.wav").write_bytes(b"")
    bank = load_noise_bank(folder)
    err = capsys.readouterr().err
    assert len(bank) == 1 and len(bank[0]) == SR
    assert "broken.wav" in err and "synthetic" not in err


# ---------------------------------------------------------------- refused inputs

@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file(tmp_path, name):
    path = write_bad_inputs(tmp_path)[name]
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(e.value).startswith(f"{path}: ") and BAD_INPUTS[name] in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nowhere.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_truncated_wav_is_used_with_a_warning(tmp_path, capsys):
    path = write_truncated_wav(tmp_path / "cut.wav", tone("moo", 1.0), keep=0.4)
    y = load_audio(path)
    err = capsys.readouterr().err.strip()
    assert len(y) == pytest.approx(0.4 * SR, abs=2)
    assert err.startswith(f"warning: {path}: truncated") and "\n" not in err


def test_resampled_8bit_stereo_loads_as_mono_16k(tmp_path):
    y = tone("chirp", 1.0, sr=8000)
    path = write_wav(tmp_path / "old.WAV", np.stack([y, y], axis=1), sr=8000, subtype="PCM_U8")
    out = load_audio(path, SR)
    assert out.ndim == 1 and abs(len(out) - SR) <= 2
    assert np.max(np.abs(out)) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("channels", [1, 2])
def test_16_bit_pcm_streams_as_libsndfile_reads_it_in_float(tmp_path, channels):
    import soundfile as sf
    frames = np.random.default_rng(5).integers(-32768, 32768, (20000, channels)).astype(np.int16)
    frames[:2] = [[-32768] * channels, [32767] * channels]   # both ends of the range
    path = tmp_path / "rec.wav"
    sf.write(path, frames, SR, subtype="PCM_16")
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    got = np.concatenate(list(stream_audio(path, SR, block_seconds=0.3)))
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_active_power_keeps_what_librosa_split_keeps():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(3)
    for n, dtype in ((16000, np.float32), (12345, np.float32), (700, np.float32), (9000, np.float64),
                     (200, np.float32), (256 * 40, np.float32), (65024, np.float32)):   # shorter than a hop, whole hops
        y = (rng.standard_normal(n) * 0.01).astype(dtype)
        y[n // 3:n // 2] += np.sin(np.arange(n // 2 - n // 3) / 5.0).astype(dtype)   # calls in quiet noise
        y[-n // 5:] += 0.2 * np.sin(np.arange(len(y[-n // 5:])) / 3.0).astype(dtype)
        intervals = librosa.effects.split(y, top_db=30, frame_length=1024, hop_length=256)
        active = np.concatenate([y[a:b] for a, b in intervals])
        assert active_power(y) == float(np.mean(active ** 2))
        assert n < 1000 or len(intervals) == 2


def test_active_power_needs_frames_of_whole_hops():
    with pytest.raises(ValueError, match="multiple"):
        active_power(np.ones(4000, np.float32), frame_length=1000, hop_length=256)


def test_what_a_decoder_prints_becomes_one_warning_naming_the_file(capfd):
    with decoder_notes(Path("x.wav")):
        os.write(2, b"Note: Trying to resync...\nNote: Hit end of (available) data during resync.\n")
    os.write(2, b"stderr is back\n")
    with decoder_notes(Path("quiet.wav")):
        pass
    assert capfd.readouterr().err == ("warning: x.wav: the MP3 decoder says: Note: Trying to resync... "
                                      "Note: Hit end of (available) data during resync.\nstderr is back\n")
