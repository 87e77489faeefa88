"""The model variants: construction, a 1-epoch smoke fit each, and loading what they save."""
import json

import numpy as np
import pytest
from conftest import tone, train_args, write_wav

keras = pytest.importorskip("keras")

import common  # noqa: E402
import enhance  # noqa: E402
import enhance_transformer  # noqa: E402
import mix_noise  # noqa: E402
import train_alexnet  # noqa: E402

SHAPE = (500, 128)
TINY_TRANSFORMER = ["--d-model", "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32", "--proj-dim", "8",
                    "--pretrain-epochs", "1", "--views", "1", "--episodes", "2", "--n-way", "3",
                    "--k-shot", "2", "--n-query", "2", "--batch-size", "4"]


def check_probabilities(model, n_classes):
    x = np.random.default_rng(0).standard_normal((3, *SHAPE)).astype(np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (3, n_classes)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(p >= 0)


def test_mix_noise_uses_the_baseline_network():
    import baseline
    assert mix_noise.baseline.build_model is baseline.build_model


def test_alexnet_construction():
    model = train_alexnet.build_model(SHAPE, 10)
    check_probabilities(model, 10)
    assert model.input_shape[1:] == SHAPE
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [c.filters for c in convs] == [24, 64, 96, 96, 64] and [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3]
    assert convs[0].strides == (4, 4) and len(dense) == 3
    assert 1e6 < model.count_params() < 3e6


def test_transformer_construction_and_safe_reload(tmp_path):
    protos = np.random.default_rng(1).standard_normal((10, 64)).astype(np.float32)
    model = enhance_transformer.build_model(SHAPE, 10, protos)
    check_probabilities(model, 10)
    assert 50_000 < model.count_params() < 1_000_000
    names = {type(layer).__name__ for layer in model.layers}
    assert "PrototypeHead" in names and "MultiHeadAttention" in names
    assert not names & {"Dropout", "GaussianNoise", "RandomFlip", "SpatialDropout1D"}   # export-clean
    head = model.get_layer("probabilities")
    assert not head.trainable_weights
    np.testing.assert_allclose(np.asarray(head.prototypes), protos)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    x = np.random.default_rng(2).standard_normal((2, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-5)


def test_enhance_ignores_padding_and_reloads_safely(tmp_path):
    model = enhance.build_model(None, 128, 10)
    saved = enhance.build_model(*SHAPE, 10)
    saved.set_weights(model.get_weights())
    check_probabilities(saved, 10)
    assert saved.input_shape[1:] == SHAPE
    call = np.zeros((1, *SHAPE), np.float32)
    call[0, :77] = np.random.default_rng(4).standard_normal((77, 128))
    # the same sound with 423 frames of padding or with none: padding must not move the answer
    np.testing.assert_allclose(np.asarray(saved(call)), np.asarray(model(call[:, :77])), atol=1e-5)
    moved = np.zeros_like(call)
    moved[0, :77] = call[0, :77] * 0.5 + 1.0          # a different sound does move it
    assert np.abs(np.asarray(saved(moved)) - np.asarray(saved(call))).max() > 1e-4
    saved.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(again(call)), np.asarray(saved(call)), atol=1e-5)


def test_masked_mean_max_pooling_by_hand():
    from core.layers import FrameMask, MaskedMeanMaxPooling
    x = np.array([[[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]],
                  [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    mask = np.array([[[1.0], [1.0], [0.0]], [[0.0], [0.0], [0.0]]], np.float32)
    np.testing.assert_allclose(np.asarray(MaskedMeanMaxPooling()([x, mask])),
                               [[2.0, -3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(FrameMask()(x))[1, :, 0], [1.0, 0.0, 0.0])


def test_naive_mix_is_reproducible_and_uses_whole_clip_power(monkeypatch):
    cfg = common.FeatureConfig()
    clips = [tone("chirp", 1.0), tone("moo", 0.8)]
    bank = [np.random.default_rng(3).standard_normal(16000).astype(np.float32)]
    calls = []
    real = common.mix_at_snr

    def spy(*a, **k):
        calls.append(k.get("active_only"))
        return real(*a, **k)

    monkeypatch.setattr(common, "mix_at_snr", spy)
    a = mix_noise.naive_mix(clips, bank, cfg, (0.0, 20.0), np.random.default_rng(0))
    b = mix_noise.naive_mix(clips, bank, cfg, (0.0, 20.0), np.random.default_rng(0))
    assert calls == [False] * 4
    np.testing.assert_array_equal(a, b)
    clean = np.stack([common.clip_features(y, cfg) for y in clips])
    assert a.shape == clean.shape and not np.allclose(a, clean)


@pytest.mark.parametrize("script, variant, extra", [
    (mix_noise, "mix_noise", []),
    (train_alexnet, "alexnet", ["--width", "0.125", "--dense", "32"]),
    (enhance_transformer, "enhance_transformer", TINY_TRANSFORMER),
    (enhance, "enhance", ["--epochs", "2"]),
])
def test_smoke_fit_saves_a_loadable_model(script, variant, extra, data_dir, tmp_path):
    args = script.make_parser().parse_args(train_args(variant, data_dir, tmp_path, *extra))
    if script is enhance:   # its front end follows its --scaling
        metrics = enhance.run(args)
    else:
        metrics = common.run_experiment(variant, args, script.train, with_audio=variant != "alexnet")
    assert 0 <= metrics["accuracy"] <= 1 and metrics["epochs_run"] >= 1
    model_dir = tmp_path / "model" / variant
    config = json.loads((model_dir / "config.json").read_text())
    assert config["variant"] == variant
    clf = common.Classifier(model_dir, backend="keras")
    probs = clf.classify(write_wav(tmp_path / "call.wav", tone("moo", 1.0))).probs
    assert probs.shape == (len(config["classes"]),) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    if variant == "enhance_transformer":
        assert (model_dir / "pretrain_history.csv").is_file()


def test_enhance_trains_with_logit_norm_when_asked(data_dir, tmp_path, monkeypatch):
    from core.losses import LogitNormLoss
    losses, real = [], common.fit_classifier

    def spy(*a, **k):
        losses.append(k.get("loss"))
        return real(*a, **k)

    monkeypatch.setattr(common, "fit_classifier", spy)
    args = enhance.make_parser().parse_args(train_args("enhance", data_dir, tmp_path, "--epochs", "1",
                                                       "--logit-norm", "0.1"))
    assert 0 <= enhance.run(args)["accuracy"] <= 1
    assert isinstance(losses[0], LogitNormLoss) and losses[0].tau == 0.1 and losses[0].label_smoothing == 0.05
    assert enhance.make_parser().parse_args([]).logit_norm == 0   # plain cross-entropy by default


def test_enhance_with_pcen_names_it_in_config_json_and_predicts_with_it(data_dir, tmp_path):
    args = enhance.make_parser().parse_args(train_args("enhance", data_dir, tmp_path, "--epochs", "1",
                                                       "--scaling", "pcen"))
    enhance.run(args)
    model_dir = tmp_path / "model" / "enhance"
    assert json.loads((model_dir / "config.json").read_text())["features"]["scaling"] == "pcen"
    clf = common.Classifier(model_dir, backend="keras", reject=False)
    assert clf.cfg == common.FeatureConfig(scaling="pcen")
    wav = write_wav(tmp_path / "call.wav", tone("moo", 1.0))
    expected = clf.predict_features(common.clip_features(common.load_audio(wav, clf.cfg.sr), clf.cfg)[None])[0]
    np.testing.assert_allclose(clf.classify(wav).probs, expected, atol=1e-5)
