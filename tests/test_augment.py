"""SpecAugment, mixup and the on-the-fly waveform augmentation."""
import numpy as np
from conftest import tone

from core.augment import WaveAugment, mixup, random_crop, spec_augment, spectral_tilt
from core.features import FeatureConfig


def test_spec_augment_masks_only_real_frames():
    rng = np.random.default_rng(0)
    x = np.zeros((8, 500, 128), np.float32)
    x[:, :80] = rng.standard_normal((8, 80, 128)) + 5      # 80 real frames, then padding
    out = spec_augment(x, rng, time_masks=2, max_time=40, freq_masks=2, max_freq=16)
    assert out.shape == x.shape and not np.shares_memory(out, x)
    assert np.all(out[:, 80:] == 0)                               # padding untouched
    masked_rows = [(out[i, :80] == 0).all(axis=1).sum() for i in range(8)]
    assert max(masked_rows) > 0 and max(masked_rows) <= 80        # time masks land inside the clip
    assert all((out[i] == 0).all(axis=0).sum() <= 2 * 16 for i in range(8))


def test_mixup_is_a_convex_blend_of_examples_and_labels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 10, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    xm, ym = mixup(x, y, rng, alpha=0.4)
    assert xm.shape == x.shape and np.allclose(ym.sum(axis=1), 1.0)
    assert np.all(ym >= 0) and not np.allclose(xm, x)


def test_wave_augment_gives_model_features_and_varies():
    cfg = FeatureConfig()
    noise = [np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1]
    aug = WaveAugment(noise, cfg, p_noise=1.0)
    clips = [tone("chirp", 1.0), tone("moo", 2.0)]
    a = aug.features(clips, np.random.default_rng(3))
    b = aug.features(clips, np.random.default_rng(4))
    assert a.shape == (2, cfg.n_frames, cfg.n_mels) and np.isfinite(a).all()
    assert not np.allclose(a, b)                                  # fresh draws per call
    assert np.allclose(a, aug.features(clips, np.random.default_rng(3)))   # seeded


def test_wave_augment_crops_random_excerpts():
    cfg = FeatureConfig()
    aug = WaveAugment([], cfg, p_noise=0.0, max_shift=0.0, crop_frames=64)
    long_clip, short_clip = tone("chirp", 6.0), tone("moo", 0.5)
    a = aug.features([long_clip, short_clip], np.random.default_rng(5))
    b = aug.features([long_clip, short_clip], np.random.default_rng(6))
    assert a.shape == (2, 64, cfg.n_mels) and aug.n_frames == 64
    assert not np.allclose(a[0], b[0])                      # a 6 s clip gives different 2 s excerpts
    np.testing.assert_allclose(a[1], b[1])                  # a 0.5 s clip is whole (then padded) each time
    assert np.all(a[1, 17:] == 0) and np.any(a[1, :16] != 0)


def test_spectral_tilt_matches_first_order_response():
    sr, n = 16000, np.arange(16000)
    a = np.random.default_rng(7).uniform(-0.5, 0.5)
    for hz in (100, 3000, 7000):
        y = np.sin(2 * np.pi * hz * n / sr).astype(np.float32)
        out = spectral_tilt(y, np.random.default_rng(7), 0.5)
        w = 2 * np.pi * hz / sr
        expected = 1 + a * a - 2 * a * np.cos(w)          # |1 - a e^{-jw}|^2
        np.testing.assert_allclose(np.mean(out[1:] ** 2) / np.mean(y[1:] ** 2), expected, rtol=1e-2)


def test_an_excerpt_of_a_shifted_clip_is_cut_without_rolling_it():
    """random_crop(y, n, rng, shift) is random_crop(np.roll(y, shift), n, rng), wrapping round the clip's end too."""
    y = np.arange(100, dtype=np.float32)
    for shift in (0, 7, -7, 60, -99):
        for seed in range(20):
            cut = random_crop(y, 30, np.random.default_rng(seed), shift)
            assert np.array_equal(cut, random_crop(np.roll(y, shift), 30, np.random.default_rng(seed)))
    assert np.array_equal(random_crop(y, 200, np.random.default_rng(0), 5), np.roll(y, 5))   # shorter: all of it
    wrapped = random_crop(y, 30, np.random.default_rng(136), 90)   # seed 136 starts at 70: y[80:] then y[:10]
    assert list(wrapped) == list(range(80, 100)) + list(range(10))
