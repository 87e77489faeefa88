"""End to end: archive -> download_data.py -> baseline -> predict.py; downloads; artifacts written atomically."""
import csv
import json
import os

import keras
import pytest
from conftest import tone, train_args, write_wav, zip_folder

import baseline
import common
import download_data
import predict
from core import reports

CHARTS = ["chart1_precision_per_class.png", "chart2_recall_per_class.png", "chart3_f1_per_class.png",
          "chart4_test_accuracy.png", "chart5_macro_vs_weighted_f1.png"]


def test_archive_to_predictions(source_dataset, tmp_path, capsys):
    archive = zip_folder(source_dataset, tmp_path / "Animal-Sound-Dataset-master.zip")
    wind = write_wav(tmp_path / "wind_src" / "gust.wav", 0.2 * tone("bark", 2.0)).parent
    data_dir = tmp_path / "Animals_Sounds"
    download_data.main(["--source", str(archive), "--data-dir", str(data_dir), "--noise-source", str(wind),
                        "--test-size", "0.25", "--seed", "0"])
    out = capsys.readouterr().out
    assert "25 clips imported" in out and "0 unreadable" in out and "1 wind recordings copied" in out
    n_test = sum(1 for p in (data_dir / "Test").rglob("*.*"))

    args = common.make_parser("baseline", "e2e").parse_args(train_args("baseline", data_dir, tmp_path))
    metrics = common.run_experiment("baseline", args, baseline.train)
    with open(tmp_path / "model" / "results.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["variant"] == "baseline" and int(row["n_test"]) == metrics["n_test"] == n_test
    # stored relative to results.csv, so the table works from any working directory
    assert (tmp_path / "model" / row["model_dir"]) == args.model_dir and 0 <= float(row["macro_f1"]) <= 1
    for chart in CHARTS:
        assert (tmp_path / "charts" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    capsys.readouterr()

    clip = next((data_dir / "Test" / "cow").iterdir())
    predict.main(["--file", str(clip), "--model-dir", str(args.model_dir), "--json"])
    assert json.loads(capsys.readouterr().out)["label"] in ("bird", "cow", "dog")
    predict.main(["--dir", str(data_dir / "Test"), "--model-dir", str(args.model_dir), "--csv",
                  str(tmp_path / "test.csv")])
    assert f"{n_test} classified, 0 skipped" in capsys.readouterr().err
    with open(tmp_path / "test.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == n_test


# ---------------------------------------------------------------- downloading

@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """Route keras.utils.get_file's cache into tmp_path (the real function, only its cache moved)."""
    real = keras.utils.get_file
    cache = tmp_path / "keras_home"
    cache.mkdir()                 # get_file falls back to /tmp/.keras when cache_dir is not writable
    monkeypatch.setattr(keras.utils, "get_file", lambda **kw: real(cache_dir=str(cache), **kw))
    return cache


def test_download_from_a_url(source_dataset, tmp_path, keras_cache, capsys):
    """keras.utils.get_file reads file:// origins, so the real download path runs without a network."""
    archive = zip_folder(source_dataset, tmp_path / "master.zip")
    data_dir = tmp_path / "Animals_Sounds"
    download_data.main(["--url", archive.as_uri(), "--data-dir", str(data_dir)])
    assert "25 clips imported" in capsys.readouterr().out
    assert len(list((keras_cache / "datasets").glob("*.zip"))) == 1
    # another URL is another archive, not the cached copy of the first one
    smaller = tmp_path / "small" / "Animal-Sound-Dataset-master"
    for i in range(3):
        write_wav(smaller / "Kedi" / f"{i}.wav", tone("chirp", 0.5, seed=i))
        write_wav(smaller / "Esek" / f"{i}.wav", tone("moo", 0.5, seed=i))
    mirror = zip_folder(smaller, tmp_path / "mirror.zip")
    download_data.main(["--url", mirror.as_uri(), "--data-dir", str(data_dir), "--force"])
    assert "6 clips imported" in capsys.readouterr().out


def test_offline_download_fails_with_one_line(tmp_path, monkeypatch, capsys):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://github.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(SystemExit) as e:
        download_data.main(["--data-dir", str(tmp_path / "Animals_Sounds")])
    message = str(e.value.code)
    assert message.startswith("error: could not download") and "--source" in message and "\n" not in message
    assert not (tmp_path / "Animals_Sounds" / "Training").exists()


# ---------------------------------------------------------------- atomic artifacts

def failing_replace(monkeypatch, fail_call: int):
    """Make the ``fail_call``-th os.replace (1-based) raise, as a full disk or a crash would."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_call:
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    reports.atomic_write(target, "old\n")
    failing_replace(monkeypatch, 1)
    with pytest.raises(OSError):
        reports.atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    monkeypatch.undo()
    reports.atomic_write(target, b"new\n")
    assert target.read_text() == "new\n"


def make_dir(path, marker):
    path.mkdir(parents=True)
    (path / "config.json").write_text(marker)
    return path


def test_swap_in_dir_replaces_whole_directories(tmp_path):
    final = make_dir(tmp_path / "baseline", "old")
    reports.swap_in_dir(make_dir(tmp_path / ".staging", "new"), final)
    assert (final / "config.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["baseline"]


def test_swap_in_dir_restores_the_old_directory_on_failure(tmp_path, monkeypatch):
    final = make_dir(tmp_path / "baseline", "old")
    staging = make_dir(tmp_path / ".staging", "new")
    failing_replace(monkeypatch, 2)               # the old one moved aside, the new one fails to move in
    with pytest.raises(OSError):
        reports.swap_in_dir(staging, final)
    assert (final / "config.json").read_text() == "old"


@pytest.mark.parametrize("failure", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_failed_training_leaves_the_previous_model(data_dir, tmp_path, failure):
    previous = make_dir(tmp_path / "model" / "baseline", '{"previous": true}')

    def train_fn(data, args, staging):
        (staging / "animal_sound_model.keras").write_bytes(b"half-written")
        raise failure
    args = common.make_parser("baseline", "test").parse_args(train_args("baseline", data_dir, tmp_path))
    with pytest.raises(type(failure)):
        common.run_experiment("baseline", args, train_fn)
    assert [p.name for p in previous.iterdir()] == ["config.json"]
    assert (previous / "config.json").read_text() == '{"previous": true}'
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["baseline"]     # no staging dir, no results
