"""train_vgg.py: the fully-convolutional network, segments, mixtures, and a single- and a multi-label model end to end."""
import contextlib
import io
import json
import shutil
import sys

import numpy as np
import pytest
from conftest import tone, train_args, write_wav

keras = pytest.importorskip("keras")

import common  # noqa: E402
import export  # noqa: E402
import live_predict  # noqa: E402
import predict  # noqa: E402
import train_vgg  # noqa: E402
from core import multilabel  # noqa: E402

TINY = ["--width-scale", "0.125"]


def test_any_input_length_gives_one_output_per_clip():
    model = train_vgg.build_model(None, 128, 5, 0.125, "sigmoid")
    for frames, segments in ((65, 1), (128, 1), (200, 3), (500, 7), (1000, 15)):
        x = np.random.default_rng(frames).standard_normal((2, frames, 128)).astype(np.float32)
        p = np.asarray(model(x))
        assert p.shape == (2, 5) and np.all((p > 0) & (p < 1))
        assert train_vgg.segment_count(frames) == segments
    softmax = train_vgg.build_model(500, 128, 5, 0.125)
    np.testing.assert_allclose(np.asarray(softmax(np.ones((1, 500, 128), np.float32))).sum(), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="40 mels"):
        train_vgg.build_model(None, 40, 5)


def test_padding_segments_do_not_count_and_the_model_reloads_safely(tmp_path):
    model = train_vgg.build_model(None, 128, 4, 0.125)
    call = np.random.default_rng(1).standard_normal((1, 80, 128)).astype(np.float32)
    short, long = np.zeros((1, 500, 128), np.float32), np.zeros((1, 1000, 128), np.float32)
    short[:, :80], long[:, :80] = call, call
    # 2 real segments in both windows: 5 or 13 segments of padding must not move the answer
    np.testing.assert_allclose(np.asarray(model(long)), np.asarray(model(short)), atol=1e-5)
    moved = short.copy()
    moved[:, :80] = 0.5 * call + 1.0
    assert np.abs(np.asarray(model(moved)) - np.asarray(model(short))).max() > 1e-4
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(again(short)), np.asarray(model(short)), atol=1e-6)


def test_segments_are_cut_on_the_64_frame_grid_with_their_sources_labels():
    assert [train_vgg.real_segments(n, 500) for n in (1, 64, 65, 80, 200, 500)] == [1, 1, 2, 2, 4, 7]
    x = np.arange(500 * 2, dtype=np.float32).reshape(500, 2) + 1
    np.testing.assert_array_equal(train_vgg.cut_segment(x, 1), x[64:192])
    last = train_vgg.cut_segment(x, 6)                          # frames 384-511: 116 real, then zeros
    np.testing.assert_array_equal(last[:116], x[384:])
    np.testing.assert_array_equal(last[116:], 0)
    bird, dog = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
    # a mixture whose bird sounds for 100 frames and dog for 300: segment 1 (frames 64-191) holds both
    assert train_vgg.segment_targets([100, 300], [bird, dog], 1).tolist() == [1, 0, 1]
    assert train_vgg.segment_targets([100, 300], [bird, dog], 2).tolist() == [0, 0, 1]


def test_segment_batches_draw_shifted_negatives_in_the_negatives_share():
    from core.dataset import Clips
    from core.negatives import SHIFTED_PREFIX
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])                 # label 2: negatives, the last two shifted
    hashes = [f"{SHIFTED_PREFIX}2/{i}" if i >= 6 else str(i) for i in range(8)]
    clips = Clips(np.ones((8, 100, 2), np.float32), y, [], hashes)
    batches = train_vgg.segment_batches(clips, np.eye(3)[np.minimum(y, 2)], None, 0, 3, seed=0)
    assert len(batches) == 2                                 # 6 segments an epoch, not 8


def test_clip_targets_give_negatives_uniform_or_no_animal():
    y = np.array([1, 3])
    np.testing.assert_allclose(train_vgg.clip_targets(y, 3, "softmax"), [[0, 1, 0], [1 / 3] * 3])
    np.testing.assert_array_equal(train_vgg.clip_targets(y, 3, "sigmoid"), [[0, 1, 0], [0, 0, 0]])


def test_mixtures_pair_different_classes_at_the_drawn_level():
    a, b = tone("moo", 1.0), tone("chirp", 1.5, seed=1)
    mixed = multilabel.mix_pair(a, b, 6.0)
    assert len(mixed) == len(b)
    added = mixed[:len(b)] - np.pad(a, (0, len(b) - len(a)))
    assert 10 * np.log10(common.active_power(a) / common.active_power(added)) == pytest.approx(6.0, abs=0.05)
    labels = np.array([0, 0, 1, 2])
    rng = np.random.default_rng(0)
    assert all(labels[i] != labels[j] for i, j in (multilabel.draw_pair(labels, rng) for _ in range(50)))
    audio = [tone(k, 1.0, seed=s) for s, k in enumerate(("moo", "moo", "chirp", "bark"))]
    cfg = common.FeatureConfig()
    x = np.stack([common.clip_features(y, cfg) for y in audio])
    first = multilabel.mixture_set(audio, labels, x, 5, 3, 10.0, cfg, np.random.default_rng(7))
    again = multilabel.mixture_set(audio, labels, x, 5, 3, 10.0, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], again[0])            # the same seed, the same mixtures
    assert first[0].shape == (5, 500, 128) and np.all(first[1].sum(axis=1) == 2)


def test_bad_flag_combinations_are_one_line(capsys):
    for argv, problem in ((["--multi-label"], "--multi-label needs a sigmoid head"),
                          (["--mix-pairs", "2"], "--mix-pairs applies to --multi-label")):
        with pytest.raises(SystemExit):
            train_vgg.parse_args(argv)
        assert problem in capsys.readouterr().err


def test_multi_label_defaults_to_fewer_epochs_of_twice_the_segments():
    assert train_vgg.parse_args([]).epochs == train_vgg.EPOCHS == 30
    assert train_vgg.parse_args(["--multi-label", "--loss", "focal"]).epochs == train_vgg.MULTI_LABEL_EPOCHS == 16
    assert train_vgg.parse_args(["--multi-label", "--loss", "focal", "--epochs", "30"]).epochs == 30


def test_single_label_ce_fits_and_reports_map(data_dir, tmp_path):
    metrics = train_vgg.main(train_args("vgg", data_dir, tmp_path, "--loss", "ce", *TINY))
    assert metrics["epochs_run"] == 1 and 0 <= metrics["mAP"] <= 1 and 0 <= metrics["mean_auc"] <= 1
    assert metrics["n_test_mixtures"] == metrics["n_test"] and "labels_micro_f1" not in metrics
    config = json.loads((tmp_path / "model" / "vgg" / "config.json").read_text())
    assert config["open_set"]["activation"] == "softmax" and "multi_label" not in config


@pytest.fixture(scope="module")
def multi_label_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vgg_multi")
    metrics = train_vgg.main(train_args("vgg", data_dir, out, "--multi-label", "--loss", "focal", "--mix-pairs",
                                        "0.5", *TINY))
    assert 0 <= metrics["labels_micro_f1"] <= 1 and 0 <= metrics["mixtures_mAP"] <= 1
    return out / "model" / "vgg"


def test_multi_label_model_stores_thresholds_and_a_sigmoid_open_set(multi_label_dir):
    config = json.loads((multi_label_dir / "config.json").read_text())
    assert config["multi_label"] is True and set(config["thresholds"]) == set(config["classes"])
    assert config["open_set"]["activation"] == "sigmoid" and config["open_set"]["temperature"] > 0
    clf = common.Classifier(multi_label_dir, backend="keras")
    probs = clf.classify(write_wav(multi_label_dir.parent / "moo.wav", tone("moo", 1.0))).probs
    assert probs.shape == (3,) and np.all((probs > 0) & (probs < 1))


def test_predict_lists_every_class_above_its_threshold(multi_label_dir, tmp_path, capsys):
    model_dir = tmp_path / "vgg"
    shutil.copytree(multi_label_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["thresholds"] = {c: 0.0 for c in config["classes"]}   # every class passes: all three are named
    (model_dir / "config.json").write_text(json.dumps(config))
    clip = write_wav(tmp_path / "clips" / "mix.wav", tone("moo", 1.0) + tone("chirp", 1.0, seed=1))
    predict.main(["--file", str(clip), "--model-dir", str(model_dir), "--json", "--no-reject"])
    rec = json.loads(capsys.readouterr().out)
    assert sorted(rec["labels"]) == ["bird", "cow", "dog"] and rec["label"] == rec["labels"][0]
    assert rec["labels"] == sorted(rec["labels"], key=rec["probabilities"].get, reverse=True)
    predict.main(["--dir", str(clip.parent), "--model-dir", str(model_dir), "--no-reject"])
    assert capsys.readouterr().out.strip() == f"{clip},{';'.join(rec['labels'])},{rec['confidence']:.3f}"


def test_live_streams_a_multi_label_model(multi_label_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    clip = write_wav(tmp_path / "call.wav", tone("bark", 2.0))
    live_predict.main(["--model-dir", str(multi_label_dir), "--fallback-file", str(clip)])
    assert "s  " in capsys.readouterr().out


def test_multi_label_model_exports_within_parity(multi_label_dir, data_dir, tmp_path):
    model_dir = tmp_path / "vgg"
    shutil.copytree(multi_label_dir, model_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        export.main(["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "c")])
    assert json.loads((model_dir / "export.json").read_text())["parity"]["passed"]
    onnx = common.Classifier(model_dir, backend="onnx")
    keras_clf = common.Classifier(model_dir, backend="keras")
    x = np.random.default_rng(0).standard_normal((2, 500, 128)).astype(np.float32)
    np.testing.assert_allclose(onnx.predict_features(x), keras_clf.predict_features(x), atol=1e-4)
