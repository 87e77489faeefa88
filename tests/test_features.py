"""The log-Mel front end, the analysis windows over long recordings, and the feature cache."""
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write_wav

from core import dataset, features
from core.audio import load_audio
from core.features import (FeatureCache, FeatureConfig, centred_frames, clip_features, log_mel, log_mels,
                           mel_power, n_real_frames, pcen, power_to_db, scale_mel)
from core.front_ends import MFCC, LogMel
from core.windows import SlidingWindows, iter_windows

CFG = FeatureConfig()
SR = CFG.sr


def test_log_mel_shape_and_short_signals():
    assert log_mel(tone("moo", 1.0), CFG).shape == (1 + SR // CFG.hop_length, CFG.n_mels)
    click = log_mel(tone("chirp", 0.01), CFG)          # shorter than one FFT frame: padded, not an error
    assert click.shape[1] == CFG.n_mels and np.all(np.isfinite(click))


def test_clip_features_normalised_then_zero_padded():
    x = clip_features(tone("moo", 1.0), CFG)
    assert x.shape == (500, 128) and x.dtype == np.float32
    real = 1 + SR // CFG.hop_length                   # centred frames of 1 s of audio
    assert abs(x[:real].mean()) < 1e-4 and x[:real].std() == pytest.approx(1.0, abs=1e-3)
    assert not np.any(x[real:])                       # "post" padding, zero = the clip's mean level


def test_pcen_is_librosas_with_the_smoother_started_at_the_first_frame():
    librosa = pytest.importorskip("librosa")
    import scipy.signal
    cfg = FeatureConfig(scaling="pcen")
    y = tone("moo", 3.0) + 0.05 * np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)
    mel = mel_power(centred_frames(y, cfg), cfg)
    s = mel.T.astype(np.float64) * 2.0 ** 31                 # librosa: (bands, frames), audio scaled to integers
    t = cfg.pcen_time_constant * SR / cfg.hop_length
    b = (np.sqrt(1 + 4 * t ** 2) - 1) / (2 * t ** 2)
    zi = scipy.signal.lfilter_zi([b], [1, b - 1]) * s[:, :1]  # the smoother's steady state at the first frame
    expected = librosa.pcen(s, sr=SR, hop_length=cfg.hop_length, gain=cfg.pcen_gain, bias=cfg.pcen_bias,
                            power=cfg.pcen_power, time_constant=cfg.pcen_time_constant, eps=1e-6, zi=zi)
    got = pcen(mel, cfg)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scale_mel(mel, cfg), got)
    np.testing.assert_array_equal(scale_mel(mel, CFG), power_to_db(mel, CFG.top_db))
    np.testing.assert_array_equal(log_mel(y, cfg), got)


def test_pcen_turns_a_steady_background_down_against_a_call_where_the_db_map_keeps_it():
    # a steady 200 Hz hum at three levels, then a chirp: the hum's band, once the smoother has caught up,
    # measured against the chirp's peak (both above the map's mean), is lower in the PCEN map
    for level in (0.3, 0.1, 0.03):
        y = level * np.sin(2 * np.pi * 200 * np.arange(4 * SR) / SR).astype(np.float32)
        y[2 * SR:3 * SR] += tone("chirp", 1.0)
        share = {}
        for cfg in (CFG, FeatureConfig(scaling="pcen")):
            x = clip_features(y, cfg)
            hum = x[16:47, 8].mean()                  # 0.5-1.5 s in the hum's band (200 Hz)
            share[cfg.scaling] = hum / x[69:87].max()  # against the chirp's peak, 2.2-2.8 s
        assert share["pcen"] < share["db"] - 0.15, (level, share)


def test_the_scaling_is_checked_and_an_old_config_reads_as_db():
    with pytest.raises(ValueError, match="scaling 'log'"):
        FeatureConfig(scaling="log")
    old = {k: v for k, v in CFG.to_dict().items() if k != "scaling" and not k.startswith("pcen")}
    assert FeatureConfig.from_dict(old) == CFG
    assert FeatureConfig(scaling="pcen").key() != CFG.key()


def test_n_real_frames_ends_at_the_last_sounding_frame():
    x = np.zeros((10, 4), np.float32)
    assert n_real_frames(x) == 1                       # nothing but padding: keep one frame
    x[[0, 6], 2] = 0.5                                 # the all-zero frames between them still count
    assert n_real_frames(x) == 7
    assert n_real_frames(clip_features(tone("moo", 1.0), CFG)) == 1 + SR // CFG.hop_length


def test_clip_features_truncates_long_audio_to_one_window():
    long = np.concatenate([tone("moo", 10.0, seed=1), tone("chirp", 10.0, seed=2)])   # 20 s > 16 s window
    other_tail = np.concatenate([long[:CFG.window_samples], tone("bark", 4.0)])
    x = clip_features(long, CFG)
    assert x.shape == (500, 128) and np.all(x.std(axis=1) > 0)   # every frame is real audio
    np.testing.assert_array_equal(x, clip_features(other_tail, CFG))   # audio past 16 s is ignored


@pytest.fixture(scope="module")
def forty_seconds(tmp_path_factory):
    """A 40 s recording at the model rate, so windows can be compared sample by sample."""
    y = np.concatenate([tone(k, 10.0, seed=i) for i, k in enumerate(("moo", "chirp", "bark", "moo"))])
    return write_wav(tmp_path_factory.mktemp("long") / "forty.wav", y)


def test_iter_windows_cover_the_file(forty_seconds):
    y = load_audio(forty_seconds)          # what the loader decodes, 16-bit rounding included
    windows = list(iter_windows(forty_seconds, CFG))
    assert CFG.window_seconds == 16.0         # 500 frames x 512 samples at 16 kHz; the hop is half of it
    assert [(a, b) for a, b, _ in windows] == [(0.0, 16.0), (8.0, 24.0), (16.0, 32.0), (24.0, 40.0)]
    for a, b, audio in windows:
        np.testing.assert_array_equal(audio, y[round(a * SR):round(b * SR)])


def test_iter_windows_respects_window_and_hop(forty_seconds):
    spans = [(a, b) for a, b, _ in iter_windows(forty_seconds, CFG, window_seconds=15.0, hop_seconds=10.0)]
    assert spans == [(0.0, 15.0), (10.0, 25.0), (20.0, 35.0), (30.0, 40.0)]   # the last reaches the end
    spans = [(a, b) for a, b, _ in iter_windows(forty_seconds, CFG, window_seconds=6.0)]
    assert spans[:2] == [(0.0, 6.0), (3.0, 9.0)] and spans[-1] == (36.0, 40.0)   # hop: half a window


def test_iter_windows_short_file_is_one_window(tmp_path):
    path = write_wav(tmp_path / "short.wav", tone("chirp", 3.0))
    [(a, b, audio)] = list(iter_windows(path, CFG))
    assert (a, b, len(audio)) == (0.0, 3.0, 3 * SR)


def test_iter_windows_streams_a_long_file_in_bounded_memory(tmp_path):
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(str(path), "w", SR, 1, "PCM_16", format="WAV") as f:
        call = np.concatenate([tone("moo", 2.0), np.zeros(8 * SR, np.float32)])
        for _ in range(60):
            f.write(call)
    decoded_bytes = 600 * SR * 4                      # the whole file as float32
    tracemalloc.start()
    try:
        n, last_end = 0, 0.0
        for _, last_end, _ in iter_windows(path, CFG):
            n += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert last_end == 600.0 and n == (600 - 16) // 8 + 1
    assert peak < decoded_bytes / 5, f"peak {peak / 1e6:.1f} MB for a {decoded_bytes / 1e6:.0f} MB recording"


def cut(y: np.ndarray, window: int, hop: int) -> tuple[list, list]:
    """The windows of ``y`` and their start samples, as a recording is cut."""
    windows = SlidingWindows(window, hop)
    spans = [*windows.push(y), *windows.finish()]
    return [audio for _, _, audio in spans], [start for start, _, _ in spans]


@pytest.mark.parametrize("window, hop, share", [
    (CFG.window_samples, CFG.window_samples // 2, 0.65),  # the default: 16 s every 8 s, frames aligned
    (SR * 3, SR + 100, 1.0),                              # a hop off the frame grid: nothing to share
    (SR // 50, SR // 100, 1.0),                           # windows shorter than an FFT: all padding
])
def test_log_mels_of_overlapping_windows_equal_each_windows_own(window, hop, share, monkeypatch):
    y = np.concatenate([tone("moo", 20.0, seed=1), tone("chirp", 17.3, seed=2)])
    windows, starts = cut(y, window, hop)
    computed = []
    real = features.mel_power
    monkeypatch.setattr(features, "mel_power", lambda frames, cfg: computed.append(len(frames)) or real(frames, cfg))
    shared = log_mels(windows, starts, CFG)
    total = sum(computed)
    computed.clear()
    own = [log_mel(w, CFG) for w in windows]
    assert [m.shape for m in shared] == [m.shape for m in own]
    for a, b in zip(shared, own):
        np.testing.assert_allclose(a, b, atol=1e-4)      # float32 sums in another order, nothing more
    assert total <= share * sum(computed)                 # the overlap's frames were computed once


@pytest.mark.parametrize("front_end", [LogMel(), LogMel(FeatureConfig(scaling="pcen")), MFCC()],
                         ids=["log_mel", "pcen", "mfcc"])
def test_window_features_equal_features_of_each_window(front_end):
    y = np.concatenate([tone("bark", 25.0, seed=3), tone("moo", 13.0, seed=4)])
    windows, starts = cut(y, CFG.window_samples, CFG.window_samples // 2)
    expected = np.stack([front_end.features(w) for w in windows])
    np.testing.assert_allclose(front_end.window_features(windows, starts), expected, atol=1e-3)
    # and of one window's log-Mel map: the very features (explain.py computes the map once)
    map_ = log_mel(windows[0][:CFG.window_samples], front_end.cfg)
    np.testing.assert_array_equal(front_end.of_log_mel(map_), expected[0])


# ---------------------------------------------------------------- cache

@pytest.fixture
def three_clips(tmp_path):
    files = [write_wav(tmp_path / f"{k}.wav", tone(k, 1.0)) for k in ("moo", "chirp", "bark")]
    return files, ["cow", "bird", "dog"]


def test_second_load_is_a_cache_hit(three_clips, cache_dir, monkeypatch):
    files, labels = three_clips
    cache = FeatureCache(cache_dir)
    first, skipped = dataset.load_clips(files, labels, sorted(labels), CFG, cache)
    assert skipped == 0 and first.x.shape == (3, 500, 128)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the features were cached")
    monkeypatch.setattr(dataset, "load_audio", no_decoding)
    monkeypatch.setattr(dataset, "clip_features", no_decoding)
    second, _ = dataset.load_clips(files, labels, sorted(labels), CFG, cache)
    np.testing.assert_allclose(second.x, first.x, atol=1e-2)     # cached as float16
    assert list(second.y) == list(first.y) and second.hashes == first.hashes


def test_a_clip_whose_audio_was_cached_gets_the_map_of_a_fresh_decode(tmp_path):
    """PCEN turns the quietest samples up, so the audio cache must hand clips back as decoded."""
    rng = np.random.default_rng(0)
    y = np.concatenate([tone("moo", 1.0, sr=22050), 3e-4 * rng.standard_normal(22050)])   # a call, then a quiet tail
    files, labels = [write_wav(tmp_path / "clip.wav", y, sr=22050)], ["cow"]   # resampled: not float16-exact
    pcen = FeatureConfig(scaling="pcen")
    fresh, _ = dataset.load_clips(files, labels, labels, pcen, FeatureCache(tmp_path / "fresh"), with_audio=True)
    warm = FeatureCache(tmp_path / "warm")
    dataset.load_clips(files, labels, labels, CFG, warm, with_audio=True)   # a dB run caches the audio first
    cached, _ = dataset.load_clips(files, labels, labels, pcen, warm, with_audio=True)
    np.testing.assert_array_equal(cached.audio[0], fresh.audio[0])
    np.testing.assert_array_equal(cached.x, fresh.x)


def test_cache_keys_follow_the_feature_config(three_clips, cache_dir, monkeypatch):
    files, labels = three_clips
    cache = FeatureCache(cache_dir)
    dataset.load_clips(files, labels, sorted(labels), CFG, cache)
    small = FeatureConfig(n_mels=64)
    assert small.key() != CFG.key() and FeatureConfig().key() == CFG.key()
    calls = []
    real = dataset.clip_features
    monkeypatch.setattr(dataset, "clip_features", lambda y, cfg: calls.append(cfg) or real(y, cfg))
    clips, _ = dataset.load_clips(files, labels, sorted(labels), small, cache)
    assert len(calls) == 3 and clips.x.shape == (3, 500, 64)   # new parameters: recomputed, not reused


def test_damaged_cache_entry_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("features", "k", "abcdef", np.ones((2, 3), np.float16))
    np.testing.assert_array_equal(cache.get("features", "k", "abcdef"), np.ones((2, 3)))
    next(tmp_path.rglob("abcdef.npy")).write_bytes(b"garbage")
    assert cache.get("features", "k", "abcdef") is None and cache.get("features", "k", "other") is None


def test_arrays_cached_by_other_code_are_not_read_back(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    cache.put("features", "k", "abcdef", np.ones(3, np.float16))
    assert cache.get("features", "k", "abcdef") is not None
    monkeypatch.setattr(features, "code_fingerprint", lambda: "0ther0de")   # an edited front end
    assert cache.get("features", "k", "abcdef") is None
