"""Synthetic non-animal sounds: spectra, levels, determinism and streaming."""
import numpy as np
import pytest
from scipy.signal import welch

from core import synthetic_noise as sn
from core.synthetic_noise import KINDS, iter_synthetic_noise, synthetic_noise

SR = 16000


def spectral_slope(y: np.ndarray, lo: float = 100.0, hi: float = 4000.0) -> float:
    """Slope of log10 power against log10 frequency between lo and hi, each octave weighted alike."""
    f, power = welch(y, SR, nperseg=8192)
    band = (f >= lo) & (f <= hi)
    # Welch bins are evenly spaced in Hz; weights 1/sqrt(f) on the residuals even them out per octave
    return float(np.polyfit(np.log10(f[band]), np.log10(power[band]), 1, w=1 / np.sqrt(f[band]))[0])


def rms_dbfs(y: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(y, dtype=np.float64)))))


@pytest.mark.parametrize("kind, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_spectral_slopes(kind, slope):
    y = synthetic_noise(kind, 20.0, SR, np.random.default_rng(1))
    assert spectral_slope(y) == pytest.approx(slope, abs=0.3)


@pytest.mark.parametrize("kind, level", [("white", -20), ("pink", -20), ("brown", -20), ("hum", -20),
                                         ("hiss", -60)])
def test_rms_levels_as_documented(kind, level):
    y = synthetic_noise(kind, 10.0, SR, np.random.default_rng(2))
    assert y.dtype == np.float32 and y.shape == (10 * SR,)
    assert rms_dbfs(y) == pytest.approx(level, abs=0.6)
    assert np.max(np.abs(y)) < 1.0


def test_clicks_peaks_and_quiet_bed():
    y = synthetic_noise("clicks", 10.0, SR, np.random.default_rng(3))
    assert 0.1 < np.max(np.abs(y)) <= 0.5 + 0.02            # largest click -6 dBFS, plus the bed's wiggle
    # over 40 clicks expected: most samples are the -50 dBFS bed, whose median |sample| is 0.6745 * RMS
    assert np.median(np.abs(y)) == pytest.approx(0.6745 * 10 ** (-50 / 20), rel=0.1)
    n_loud = np.sum((np.abs(y[1:]) > 0.05) & (np.abs(y[:-1]) <= 0.05))   # onsets above the bed
    assert 20 <= n_loud <= 70


def test_hiss_is_high_passed():
    y = synthetic_noise("hiss", 10.0, SR, np.random.default_rng(4))
    f, power = welch(y, SR, nperseg=2048)
    assert power[(f > 4000) & (f < 7000)].mean() > 100 * power[(f > 50) & (f < 200)].mean()


def test_hum_peaks_at_the_mains_frequency():
    found = set()
    for seed in range(6):
        y = synthetic_noise("hum", 4.0, SR, np.random.default_rng(seed))
        f, power = welch(y, SR, nperseg=SR)                 # 1 Hz bins
        peak = f[np.argmax(power)]
        assert peak in (50.0, 60.0)
        found.add(peak)
        # harmonics are there too, but weaker than the fundamental
        assert 0 < power[f == 2 * peak][0] < power[f == peak][0]
    assert found == {50.0, 60.0}                              # the rng picks both over a few seeds


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed(kind):
    a = synthetic_noise(kind, 0.5, SR, np.random.default_rng(7))
    np.testing.assert_array_equal(a, synthetic_noise(kind, 0.5, SR, np.random.default_rng(7)))
    assert not np.array_equal(a, synthetic_noise(kind, 0.5, SR, np.random.default_rng(8)))
    rng = np.random.default_rng(7)
    assert not np.array_equal(synthetic_noise(kind, 0.5, SR, rng), synthetic_noise(kind, 0.5, SR, rng))


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_concatenate_to_the_whole(kind):
    blocks = list(iter_synthetic_noise(kind, 2.3, SR, block_seconds=0.5, rng=np.random.default_rng(5)))
    assert [len(b) for b in blocks] == [8000, 8000, 8000, 8000, 4800]
    assert all(b.dtype == np.float32 for b in blocks)
    whole = synthetic_noise(kind, 2.3, SR, np.random.default_rng(5))
    np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind", ["pink", "brown"])
def test_no_fade_in(kind):
    # the recursive filters are warmed up: the first 4 ms of many seeds are already at -20 dBFS
    starts = np.concatenate([synthetic_noise(kind, 64 / SR, SR, np.random.default_rng(s)) for s in range(300)])
    assert rms_dbfs(starts) == pytest.approx(-20, abs=1.0)


def test_other_sample_rates_and_bad_input():
    y = synthetic_noise("hiss", 1.0, 8000, np.random.default_rng(0))   # cutoff stays below Nyquist
    assert len(y) == 8000 and rms_dbfs(y) == pytest.approx(-60, abs=0.5)
    assert len(synthetic_noise("white", 0.0)) == 0
    with pytest.raises(ValueError):
        synthetic_noise("rain", 1.0)
    with pytest.raises(ValueError):
        synthetic_noise("white", 1.0, sr=22050.5)
    assert sn.NOISE_RMS_DBFS == -20.0 and sn.HISS_RMS_DBFS == -60.0
