"""Cross-validation (``--folds K``): fold assignment, its groups, and a 2-fold run of baseline.py."""
import json
import runpy
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, train_args

from core.dataset import DatasetError
from core.folds import FOLD_FILES, assign_folds, check_fold_count, recording_groups


def labelled_set():
    """60 clips of 3 classes (30/20/10), clips 0-1, 2-3, 4-5 ... of a class in pairs (copies of one recording)."""
    labels = np.repeat([0, 1, 2], [30, 20, 10])
    groups = [f"c{y}-r{i // 2}" for i, y in enumerate(labels)]
    return labels, groups


def test_folds_are_stratified_deterministic_and_keep_groups_whole():
    labels, groups = labelled_set()
    folds = assign_folds(labels, groups, 5, seed=42)
    assert set(folds) == set(range(5))                      # every clip is tested, in exactly one fold
    for group in set(groups):
        assert len({f for f, g in zip(folds, groups) if g == group}) == 1
    for cls, total in enumerate((30, 20, 10)):              # each fold holds its share of each class
        per_fold = np.bincount(folds[labels == cls], minlength=5)
        assert per_fold.min() > 0 and np.abs(per_fold - total / 5).max() <= 2
    np.testing.assert_array_equal(folds, assign_folds(labels, groups, 5, seed=42))
    assert not np.array_equal(folds, assign_folds(labels, groups, 5, seed=7))


def test_recording_groups_join_copies_and_recordings():
    manifest = [{"file": "Training/cat/a.wav", "hash": "h1", "source": "A/a.wav"},
                {"file": "Test/cat/a_copy.wav", "hash": "h1", "source": "A/a_copy.wav"},       # same audio
                {"file": "Training/dog/r1_0.wav", "hash": "h2", "source": "site/r1.wav"},
                {"file": "Test/cat/r1_5.wav", "hash": "h3", "source": "site/r1.wav"},           # same recording
                {"file": "Training/dog/b.wav", "hash": "h4", "source": "B/b.wav"}]
    files = [r["file"] for r in manifest] + ["Training/dog/unlisted.wav"]
    groups = recording_groups(files, ["x0", "x1", "x2", "x3", "x4", "bytes"], manifest)
    assert groups[0] == groups[1] and groups[2] == groups[3]
    assert len({groups[0], groups[2], groups[4], groups[5]}) == 4
    assert groups[5] == "content:bytes"


@pytest.mark.parametrize("k, message", [(1, "at least 2 folds"), (0, "at least 2 folds"),
                                        (4, "class 'cow' has only 3 distinct recordings")])
def test_bad_fold_counts_are_refused(k, message):
    labels = np.array([0] * 6 + [1] * 4)
    groups = [f"cat{i}" for i in range(6)] + ["cow0", "cow0", "cow1", "cow2"]
    with pytest.raises(DatasetError, match=message):
        check_fold_count(k, labels, groups, ["cat", "cow"])
    check_fold_count(3, labels, groups, ["cat", "cow"])


def run_baseline(monkeypatch, *argv):
    """Run baseline.py as its command line does."""
    monkeypatch.setattr(sys, "argv", ["baseline.py", *argv])
    runpy.run_path(str(ROOT / "baseline.py"), run_name="__main__")


def test_too_many_folds_is_one_line(monkeypatch, tmp_path, data_dir):
    with pytest.raises(SystemExit) as stop:
        run_baseline(monkeypatch, *train_args("baseline", data_dir, tmp_path, "--folds", "9"))
    message = str(stop.value.code)
    assert message.startswith("error: --folds 9: class ") and "use --folds 8 or fewer" in message
    assert "\n" not in message
    assert not (tmp_path / "model" / "baseline").exists()


def test_two_fold_run_writes_every_fold_and_a_working_model_dir(monkeypatch, tmp_path, data_dir, capsys):
    run_baseline(monkeypatch, *train_args("baseline", data_dir, tmp_path, "--folds", "2"))
    model_dir = tmp_path / "model" / "baseline"
    out = capsys.readouterr().out
    assert "fold 1/2" in out and "fold 2/2" in out and "2-fold cross-validation over" in out
    per_fold = [json.loads((model_dir / "folds" / f"fold{k}" / "metrics.json").read_text()) for k in (1, 2)]
    for k in (1, 2):
        assert {p.name for p in (model_dir / "folds" / f"fold{k}").iterdir()} == set(FOLD_FILES)
    assignment = pd.read_csv(model_dir / "folds" / "assignment.csv")
    assert len(assignment) == assignment["file"].nunique() == sum(m["n_test"] for m in per_fold)
    assert (assignment.groupby("group")["fold"].nunique() == 1).all()
    cv = json.loads((model_dir / "cv_metrics.json").read_text())
    assert cv["folds"] == 2 and [f["fold"] for f in cv["per_fold"]] == [1, 2]
    for key in ("accuracy", "macro_f1", "weighted_f1", "ece", "val_macro_f1", "train_seconds"):
        values = [m[key] for m in per_fold]
        assert cv["mean"][key] == pytest.approx(np.mean(values))
        assert cv["std"][key] == pytest.approx(np.std(values))
    report = pd.read_csv(model_dir / "cv_report.csv", index_col=0)
    assert {"precision_mean", "precision_std", "f1-score_mean"} <= set(report.columns)
    assert {"bird", "cow", "dog", "macro avg"} <= set(report.index)
    # the directory is the chosen fold's complete model: its metrics, and predict.py's loader works on it
    chosen = cv["model_fold"]
    assert json.loads((model_dir / "metrics.json").read_text()) == per_fold[chosen - 1]
    assert per_fold[chosen - 1]["val_macro_f1"] == max(m["val_macro_f1"] for m in per_fold)
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]
    import common
    classifier = common.load_classifier(model_dir)
    recording = classifier.classify(next((data_dir / "Test" / "dog").iterdir()))
    assert recording.probs.shape == (3,) and classifier.decide(recording.probs, recording.ood_score)[0]


def test_compare_table_counts_folds():
    from bench.compare import summarise
    rows = [{"accuracy": a, "macro_f1": 0.5, "weighted_f1": 0.5} for a in (0.6, 0.8)]
    table = summarise({"baseline": rows}, unit="folds")
    assert table.startswith("| variant | folds |") and "| baseline | 2 | 0.700 ± 0.100 |" in table
