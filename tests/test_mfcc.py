"""The MFCC front end: librosa's MFCCs and deltas in numpy, its cache, and its config.json entry."""
import dataclasses

import numpy as np
import pytest
from conftest import tone

from core.dataset import Clips, file_hash
from core.features import FeatureCache, FeatureConfig, MFCCConfig, log_mel, mfcc_features, savgol_delta
from core.front_ends import MFCC, LogMel, front_end_of

CFG = FeatureConfig()


def test_mfcc_and_deltas_match_librosa_on_the_same_log_mel():
    librosa = pytest.importorskip("librosa")
    for y in (tone("chirp", 2.0), tone("bark", 0.7, seed=3), tone("moo", 16.5)):
        db = log_mel(y, CFG)[:CFG.n_frames]
        coefficients = librosa.feature.mfcc(S=db.T, n_mfcc=40)
        expected = np.concatenate([coefficients, librosa.feature.delta(coefficients, order=1),
                                   librosa.feature.delta(coefficients, order=2)]).T
        x = mfcc_features(y, CFG, MFCCConfig())
        assert x.shape == (500, 120)
        scale = np.abs(expected).max(axis=0)                # c0 reaches ~900, the deltas a few units
        assert np.all(np.abs(x[:len(db)] - expected) <= 1e-5 * scale + 1e-4)
        assert not x[len(db):].any()                         # padding frames are all zero


def test_deltas_of_short_clips_use_the_widest_window_that_fits():
    librosa = pytest.importorskip("librosa")
    c = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    for order in (1, 2):
        np.testing.assert_allclose(savgol_delta(c, order, 9), librosa.feature.delta(c.T, width=5, order=order).T,
                                   atol=1e-5)
    assert not savgol_delta(c[:2], 1, 9).any()              # under 3 frames: no slope to fit


def test_fewer_deltas_and_coefficients_are_a_prefix():
    y = tone("moo", 1.0)
    full = mfcc_features(y, CFG, MFCCConfig())
    np.testing.assert_array_equal(mfcc_features(y, CFG, MFCCConfig(n_mfcc=40, delta_order=1)), full[:, :80])
    np.testing.assert_allclose(mfcc_features(y, CFG, MFCCConfig(n_mfcc=13, delta_order=0)), full[:, :13], atol=1e-4)


@pytest.mark.parametrize("params", [dict(delta_order=3), dict(delta_width=4), dict(n_mfcc=0)])
def test_bad_parameters_are_one_clear_error(params):
    with pytest.raises(ValueError, match="MFCC parameters"):
        MFCCConfig(**params)
    with pytest.raises(ValueError, match="at most n_mels"):
        MFCC(MFCCConfig(n_mfcc=200))


def test_mfccs_need_the_db_map():
    with pytest.raises(ValueError, match="MFCCs are of the dB map"):
        MFCC(cfg=FeatureConfig(scaling="pcen"))


def test_features_are_cached_so_a_second_run_computes_nothing(tmp_path, monkeypatch):
    """Clips with audio (Training) and without (Test: read through the audio cache) come back from the cache."""
    audio = [tone("chirp", 1.2), tone("moo", 0.5, seed=1)]
    files = []
    for i, y in enumerate(audio):
        import soundfile as sf
        files.append(tmp_path / f"clip{i}.wav")
        sf.write(files[-1], y, CFG.sr, subtype="FLOAT")
    front_end = MFCC()
    train = Clips(np.zeros((2, 500, 128), np.float32), np.array([0, 1]), files, [file_hash(f) for f in files],
                  audio)
    test = dataclasses.replace(train, audio=None)
    first = front_end.featurize(train, tmp_path / "cache").x
    assert first.shape == (2, *front_end.input_shape)
    # the features of the clip as the audio cache stores it (float16), whichever way it arrived
    np.testing.assert_array_equal(first[0], front_end.features(audio[0].astype(np.float16)))
    monkeypatch.setattr("core.front_ends.mfcc_features", lambda *a: pytest.fail("computed again"))
    monkeypatch.setattr("core.dataset.load_audio", lambda *a: pytest.fail("decoded again"))
    np.testing.assert_array_equal(front_end.featurize(train, tmp_path / "cache").x, first)
    cache = FeatureCache(tmp_path / "cache")
    assert list((tmp_path / "cache" / "mfcc").iterdir()) == [cache.folder("mfcc", front_end.key())]
    monkeypatch.undo()
    np.testing.assert_array_equal(front_end.featurize(test, tmp_path / "cache").x, first)   # decodes, caches audio
    monkeypatch.setattr("core.dataset.load_audio", lambda *a: pytest.fail("decoded again"))
    np.testing.assert_array_equal(front_end.featurize(test, tmp_path / "cache").x, first)


def test_config_round_trip_and_old_configs_mean_log_mel():
    front_end = MFCC(MFCCConfig(n_mfcc=20, delta_order=1))
    config = front_end.config()
    assert config["front_end"] == {"kind": "mfcc", "n_mfcc": 20, "delta_order": 1, "delta_width": 9}
    again = front_end_of(config)
    assert isinstance(again, MFCC) and again.params == front_end.params and again.cfg == front_end.cfg
    assert again.input_shape == (500, 40) and again.input_name == "mfcc" and again.key() == front_end.key()
    old = front_end_of({"features": CFG.to_dict()})                # written before front ends had names
    assert isinstance(old, LogMel) and old.input_shape == (500, 128)
    with pytest.raises(TypeError):
        front_end_of({**config, "front_end": {**config["front_end"], "n_ceps": 3}})


def test_a_model_config_with_an_unknown_mfcc_entry_is_refused_in_one_line(tmp_path):
    import json

    from core.backends import ModelDirError
    from core.inference import read_model_config
    config = {**MFCC().config(), "classes": ["cow", "dog"]}
    config["front_end"]["lifter"] = 22
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="incompatible model config"):
        read_model_config(tmp_path)
