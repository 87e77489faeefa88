"""Open-set rejection end to end: what a model directory stores, "unknown" on noise, old models, ood.py."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import tone, write_wav

import common
import ood
from core.inference import UNKNOWN
from core.negatives import BACKGROUND, add_negatives, collect_negatives, cut_clips, draws_per_epoch, played_at
from core.rejection import OpenSet
from core.synthetic_noise import synthetic_noise
from core.training import one_hot


def test_one_hot_gives_negatives_the_uniform_target():
    np.testing.assert_allclose(one_hot(np.array([1, 3, 0]), 3), [[0, 1, 0], [1 / 3] * 3, [1, 0, 0]])


def test_cut_clips_cover_a_recording_in_clips_of_animal_length():
    rng = np.random.default_rng(0)
    y = np.arange(16000 * 20, dtype=np.float32)
    clips = cut_clips(y, 16000, rng)
    np.testing.assert_array_equal(np.concatenate(clips), y)
    assert all(1.5 * 16000 <= len(c) <= 2 * 6.0 * 16000 for c in clips)
    assert len(cut_clips(y[:8000], 16000, rng)) == 1


def test_negatives_come_from_noise_folders_training_negatives_and_the_synthetic_bank(data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    for i in range(4):
        write_wav(data / "Training" / "background" / f"rain{i}.wav", 0.1 * synthetic_noise("pink", 2.0 + i))
    cfg = common.FeatureConfig()
    negatives = collect_negatives(data, cfg, seed=0, synthetic_per_kind=2)
    assert negatives.kinds.count("wind") == 2 and negatives.kinds.count("background") == 4
    assert sum(k.startswith("synthetic") for k in negatives.kinds) == 12
    splits = common.load_splits(data, cfg, seed=0, val_size=0.25, cache_dir=None)
    assert BACKGROUND in splits.classes             # load_splits takes the folder for a class ...
    for design, classes in (("uniform", ["bird", "cow", "dog"]), ("background", ["bird", "cow", "dog", BACKGROUND])):
        mixed = add_negatives(splits, negatives, cfg, design, seed=0, val_size=0.25)
        assert mixed.classes == classes               # ... which outlier exposure turns into negatives
        n_negative = sum((part.y == 3).sum() for part in (mixed.train, mixed.val))
        assert n_negative == len(negatives.audio) and set(mixed.test.y) <= {0, 1, 2}
        assert len(mixed.train.x) == len(mixed.train.y) == len(mixed.train.files)


def test_negatives_are_as_long_as_the_recipe_asks(data_dir):
    """--negative-seconds: a network that pools its whole window, padding included, can be shown window-long noise."""
    cfg = common.FeatureConfig()
    rng = np.random.default_rng(0)
    clips = cut_clips(np.zeros(30 * cfg.sr, np.float32), cfg.sr, rng, (4.0, 5.0))
    assert sum(map(len, clips)) == 30 * cfg.sr and all(4 * cfg.sr <= len(c) <= 9 * cfg.sr for c in clips)
    assert all(len(c) <= 5 * cfg.sr for c in clips[:-1])   # only the last may have taken in a short tail
    negatives = collect_negatives(data_dir, cfg, seed=0, synthetic_per_kind=2, clip_seconds=(15.0, 16.0))
    synthetic = [len(a) / cfg.sr for a, k in zip(negatives.audio, negatives.kinds) if k.startswith("synthetic")]
    assert len(synthetic) == 12 and all(15.0 <= s <= 16.0 for s in synthetic)


def test_played_at_moves_pitch_and_tempo_together():
    sr = 16000
    y = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    for factor, length, hz in ((2.0, 8000, 880), (0.5, 32000, 220), (1.5, 10667, 660)):
        played = played_at(y, factor)
        peak = np.argmax(np.abs(np.fft.rfft(played))) * sr / len(played)
        assert played.dtype == np.float32 and len(played) == length and peak == pytest.approx(hz, abs=1)
    with pytest.raises(ValueError, match="positive"):
        played_at(y, 0.0)


def test_shifted_animal_clips_are_negatives_of_their_own_split(data_dir, tmp_path):
    cfg = common.FeatureConfig()
    splits = common.load_splits(data_dir, cfg, seed=0, val_size=0.25, with_audio=True, cache_dir=None)
    negatives = collect_negatives(data_dir, cfg, seed=0, synthetic_per_kind=0)
    plain = add_negatives(splits, negatives, cfg, "uniform", seed=0, val_size=0.25)
    mixed = add_negatives(splits, negatives, cfg, "uniform", seed=0, val_size=0.25, shifted=(0.5, 2.0))
    label = len(mixed.classes)
    for part, animals in (("train", splits.train), ("val", splits.val)):
        before, after = getattr(plain, part), getattr(mixed, part)
        added = slice(len(before.y), None)
        assert len(after.y) == len(before.y) + 2 * len(animals.y) and set(after.y[added]) == {label}
        assert set(after.hashes[added]) == {f"played-x{f:g}/{h}" for f in (0.5, 2) for h in animals.hashes}
        doubled = after.audio[len(before.y):len(before.y) + len(animals.y)]   # speed 0.5 first
        assert [len(a) for a in doubled] == [2 * len(a) for a in animals.audio]
        last = len(after.y) - 1                          # speed 2 of the last clip, computed on another thread
        np.testing.assert_array_equal(after.x[last], common.clip_features(played_at(animals.audio[-1], 2.0), cfg))
        assert after.x.shape[1:] == before.x.shape[1:]
        assert draws_per_epoch(after) == len(before.y)   # an epoch as long as without them
    np.testing.assert_array_equal(mixed.test.y, plain.test.y)   # Test keeps its animals only
    from core.training import make_parser, prepare_data
    flags = ["--data-dir", str(data_dir), "--cache-dir", str(tmp_path), "--seed", "0", "--val-size", "0.25"]
    args = make_parser("t", "t").parse_args(flags + ["--shifted-negatives", "0.5", "2"])
    assert args.shifted_negatives == [0.5, 2.0] and make_parser("t", "t").parse_args([]).shifted_negatives == []
    assert make_parser("t", "t", shifted_negatives=(2.0,)).parse_args([]).shifted_negatives == [2.0]
    assert make_parser("t", "t", shifted_negatives=(2.0,)).parse_args(["--no-shifted-negatives"]).shifted_negatives == []
    runs = [prepare_data(make_parser("t", "t").parse_args(flags)), prepare_data(args)]   # a recipe without audio too
    sizes = [len(run.train.y) + len(run.val.y) for run in runs]
    assert sizes[1] - sizes[0] == 2 * (len(splits.train.y) + len(splits.val.y))
    without_audio = common.load_splits(data_dir, cfg, seed=0, val_size=0.25, cache_dir=None)
    with pytest.raises(ValueError, match="needs the clips' audio"):
        add_negatives(without_audio, negatives, cfg, "uniform", seed=0, val_size=0.25, shifted=(2.0,))


def test_the_synthetic_winds_a_recipe_mixes_in_are_negatives_too(data_dir):
    import argparse

    from core.training import collect_outliers, noise_bank, synthetic_winds
    args = argparse.Namespace(data_dir=data_dir, seed=3, outliers="uniform", synthetic_wind=2,
                              synthetic_wind_corner=(50.0, 8000.0), p_noise=0.5)
    front_end = common.LogMel(common.FeatureConfig())
    negatives = collect_outliers(args, front_end)
    winds = [a for a, k in zip(negatives.audio, negatives.kinds) if k == "synthetic wind"]
    mixed_in = noise_bank(args, front_end.cfg)[-2:]   # the two synthetic winds mixed under calls
    np.testing.assert_array_equal(np.concatenate(winds), np.concatenate(mixed_in))   # cut whole
    assert all(a is b for a, b in zip(mixed_in, synthetic_winds(args, front_end.cfg)))   # drawn once, shared...
    assert not any(w.flags.writeable for w in mixed_in)                                 # ...and read-only
    other_seed = synthetic_winds(argparse.Namespace(**{**vars(args), "seed": 4}), front_end.cfg)
    assert not np.array_equal(other_seed[0], mixed_in[0])
    assert len({g for g, k in zip(negatives.groups, negatives.kinds) if k == "synthetic wind"}) == 2
    without = collect_outliers(argparse.Namespace(data_dir=data_dir, seed=3, outliers="uniform"), front_end)
    assert "synthetic wind" not in without.kinds and len(without.audio) == len(negatives.audio) - len(winds)
    unmixed = collect_outliers(argparse.Namespace(**{**vars(args), "p_noise": 0.0}), front_end)
    assert "synthetic wind" not in unmixed.kinds                       # no wind mixed in, none shown alone
    assert collect_outliers(argparse.Namespace(**{**vars(args), "outliers": "none"}), front_end) is None


def test_model_directory_stores_calibration_and_rejection(trained_model_dir):
    config = json.loads((trained_model_dir / "config.json").read_text())
    metrics = json.loads((trained_model_dir / "metrics.json").read_text())
    open_set = config["open_set"]
    assert open_set["temperature"] > 0 and open_set["keep"] == 0.95
    assert open_set["threshold"] == open_set["thresholds"][open_set["score"]]
    for name in ("centroids", "means", "precision", "bank"):
        np.load(trained_model_dir / "open_set" / f"{name}.npy", allow_pickle=False)
    assert {"ece", "ece_uncalibrated", "nll", "nll_uncalibrated"} <= set(metrics)
    assert (trained_model_dir / "reliability.png").stat().st_size > 1000
    loaded = OpenSet.load(trained_model_dir, open_set)
    assert loaded.centroids.shape[0] == len(config["classes"]) and loaded.bank.shape[1] == loaded.centroids.shape[1]


def test_thresholds_keep_the_share_of_validation_clips():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((60, 4))
    labels = np.repeat([0, 1, 2], 20)
    logits = rng.standard_normal((40, 3)) * 3
    fitted = OpenSet.fit(emb, labels, logits, rng.standard_normal((40, 4)), rng.integers(0, 3, 40), 3, keep=0.9)
    val_scores = fitted.all_scores(logits, rng.standard_normal((40, 4)))
    for name in ("msp", "entropy", "energy"):            # probability scores do not depend on the embedding
        assert np.mean(val_scores[name] <= fitted.thresholds[name]) == pytest.approx(0.9)


def test_a_tiny_model_says_unknown_to_noise_and_names_its_animals(trained_model_dir, tmp_path):
    clf = common.Classifier(trained_model_dir, "keras")
    noise = write_wav(tmp_path / "pink.wav", synthetic_noise("pink", 40.0, rng=np.random.default_rng(5)))
    recording = clf.classify(noise)
    labels = [clf.decide(w.probs, w.ood_score)[0] for w in recording.windows]
    assert labels.count(UNKNOWN) == len(labels) and clf.decide(recording.probs, recording.ood_score)[0] == UNKNOWN
    call = clf.classify(write_wav(tmp_path / "moo.wav", tone("moo", 1.0, seed=3)))
    assert clf.decide(call.probs, call.ood_score)[0] == "cow"
    assert common.Classifier(trained_model_dir, "keras", reject=False).decide(recording.probs)[0] != UNKNOWN


def test_a_model_trained_before_rejection_still_classifies_with_one_warning(trained_model_dir, tmp_path, capsys):
    old = tmp_path / "old_model"
    shutil.copytree(trained_model_dir, old)
    config = json.loads((old / "config.json").read_text())
    del config["open_set"]
    (old / "config.json").write_text(json.dumps(config))
    clf = common.Classifier(old, "keras")
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "cannot say 'unknown'" in err
    probs, scores = clf.analyse(np.zeros((1, 500, 128), np.float32))
    assert scores is None and clf.decide(probs[0], None)[0] in config["classes"]


def test_ood_py_reports_every_score_with_pictures(trained_model_dir, data_dir, tmp_path, capsys):
    noise_dir = tmp_path / "noise"
    for kind in ("white", "brown"):
        write_wav(noise_dir / f"{kind}.wav", synthetic_noise(kind, 20.0))
    out = tmp_path / "report"
    ood.main(["--model-dir", str(trained_model_dir), "--ood-dir", str(noise_dir), "--out", str(out),
              "--mc-samples", "3", "--data-dir", str(data_dir)])
    table = pd.read_csv(out / "ood_report.csv")
    assert set(table["score"]) == {"msp", "entropy", "energy", "cosine", "mahalanobis", "knn", "mc_msp", "mc_variance"}
    assert table["auroc"].between(0, 1).all() and (table["n_ood"] == 4).all()   # two 20 s files, 2 windows each
    assert (out / "roc_curves.png").stat().st_size > 1000 and (out / "centroid_distances.png").stat().st_size > 1000


def test_ood_py_refuses_an_empty_folder_in_one_line(trained_model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        ood.main(["--model-dir", str(trained_model_dir), "--ood-dir", str(tmp_path / "empty"), "--mc-samples", "0"])
    assert e.value.code == f"error: {tmp_path / 'empty'}: no readable recordings"


def test_a_seed_ensemble_of_one_model_twice_scores_as_that_model(trained_model_dir, data_dir, tmp_path, monkeypatch):
    from bench.open_set import features_of, seed_ensemble
    from core import openset
    monkeypatch.setattr(common, "DEFAULT_CACHE", tmp_path / "cache")
    clf = common.Classifier(trained_model_dir, "keras")
    pair = tuple(clf.classes[:2])
    result = seed_ensemble([trained_model_dir, trained_model_dir], data_dir, data_dir, pair)
    known = common.load_splits(data_dir, clf.cfg, 0, cache_dir=tmp_path / "cache").test
    known_probs = clf.analyse(known.x)[0]
    unknown_probs = clf.analyse(features_of(clf, [data_dir / "Test" / c for c in pair]))[0]
    for name, score in (("msp", openset.max_probability_score), ("entropy", openset.entropy_score)):
        assert result["test"][name]["auroc"] == pytest.approx(openset.auroc(score(known_probs), score(unknown_probs)))
    assert result["accuracy"] == pytest.approx(np.mean(known_probs.argmax(axis=1) == known.y))
    assert 0.0 <= result["ece_if_calibrated"] <= 1.0 and result["members"] == [str(trained_model_dir)] * 2


def test_pooled_calibration_measures_every_models_test_predictions_together():
    from bench.open_set import pooled_calibration
    from core import calibration
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(3):
        probs = rng.dirichlet(np.ones(4), 100)
        sharpened = probs ** 2 / np.sum(probs ** 2, axis=1, keepdims=True)
        runs.append({"test_y": rng.integers(0, 4, 100).tolist(), "test_probs": probs.tolist(),
                     "test_probs_uncalibrated": sharpened.tolist()})
    pooled = pooled_calibration(runs)
    y = np.concatenate([r["test_y"] for r in runs])
    probs, sharpened = (np.concatenate([r[k] for r in runs]) for k in ("test_probs", "test_probs_uncalibrated"))
    assert pooled["n"] == 300
    assert pooled["ece"] == pytest.approx(calibration.expected_calibration_error(probs, y))
    assert pooled["ece_uncalibrated"] == pytest.approx(calibration.expected_calibration_error(sharpened, y))
    assert pooled["confidence"] == pytest.approx(np.mean(probs.max(axis=1)))
    assert pooled["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == y))
    # three times the clips: what even a perfectly calibrated model would measure falls
    each = [calibration.ece_if_calibrated(np.asarray(r["test_probs"])) for r in runs]
    assert pooled["ece_if_calibrated"] < min(each)


def test_predictions_of_a_model_are_its_calibrated_and_raw_probabilities(trained_model_dir, data_dir, tmp_path):
    from bench.open_set import predictions_of
    from core import calibration
    clf = common.Classifier(trained_model_dir, "keras")
    test = common.load_splits(data_dir, clf.cfg, 0, cache_dir=tmp_path / "cache").test
    record = predictions_of(clf, test.x, test.y)
    logits = clf.predictor.run(test.x)[0]
    np.testing.assert_allclose(record["test_probs"], clf.analyse(test.x)[0], atol=1e-6)
    np.testing.assert_allclose(record["test_probs_uncalibrated"], calibration.softmax(logits), atol=1e-6)
    assert record["test_y"] == test.y.tolist() and clf.open_set.temperature != 1.0
