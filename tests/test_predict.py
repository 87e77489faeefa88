"""predict.py: output formats, the default model choice, and one-line errors for every bad input."""
import csv
import json
import re
import shutil
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from conftest import BAD_INPUTS, tone, write_bad_inputs, write_stray_files, write_truncated_wav, write_wav

import predict
from core.inference import default_model_dir
from core.reports import append_result, result_row

CLASSES = ["bird", "cow", "dog"]


def run_predict(capsys, *argv):
    """predict.main(argv) -> (stdout, stderr)."""
    predict.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return captured.out, captured.err


def exit_message(capsys, *argv) -> str:
    """The message predict.main exits with; it must be one line and print nothing else."""
    with pytest.raises(SystemExit) as e:
        predict.main([str(a) for a in argv])
    message = str(e.value.code)
    assert "\n" not in message and message.startswith("error: ")
    assert capsys.readouterr().out == ""
    return message


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three short recordings, one of them with a comma in its name."""
    folder = tmp_path_factory.mktemp("clips")
    return [write_wav(folder / name, tone(kind, 1.0, seed=3))
            for name, kind in (("cow.wav", "moo"), ("bird, dawn.wav", "chirp"), ("dog.WAV", "bark"))]


def test_file_prints_top_k(trained_model_dir, clips, capsys):
    out, _ = run_predict(capsys, "--file", clips[0], "--model-dir", trained_model_dir, "--top-k", "2")
    head, *ranked = out.strip().splitlines()
    assert re.fullmatch(rf"{re.escape(str(clips[0]))}: ({'|'.join(CLASSES)}) \(\d\.\d\d\)", head)
    assert len(ranked) == 2
    probs = [float(line.split()[1]) for line in ranked]
    assert all(line.split()[0] in CLASSES for line in ranked) and probs == sorted(probs, reverse=True)
    assert head.split()[1] == ranked[0].split()[0]           # the label is the top-ranked class


def test_file_json(trained_model_dir, clips, capsys):
    out, _ = run_predict(capsys, "--file", clips[1], "--model-dir", trained_model_dir, "--json")
    rec = json.loads(out)
    assert set(rec) == {"file", "label", "confidence", "probabilities", "ood_score"}
    assert list(rec["probabilities"]) == CLASSES and sum(rec["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert rec["label"] in (max(rec["probabilities"], key=rec["probabilities"].get), "unknown")
    assert rec["confidence"] == max(rec["probabilities"].values())


def test_timeline_lists_each_window(trained_model_dir, tmp_path, capsys):
    path = write_wav(tmp_path / "twenty.wav", np.concatenate([tone("moo", 10.0), tone("chirp", 10.0)]))
    out, _ = run_predict(capsys, "--file", path, "--model-dir", trained_model_dir, "--timeline")
    spans = [(float(a), float(b)) for a, b in re.findall(r"^\s+(\d+\.\d\d)-\s*(\d+\.\d\d) s\s+\w+", out, re.M)]
    assert spans == [(0.0, 16.0), (8.0, 20.0)]
    out, _ = run_predict(capsys, "--file", path, "--model-dir", trained_model_dir, "--json", "--timeline",
                         "--window-seconds", "5", "--hop-seconds", "5")
    assert [(w["start"], w["end"]) for w in json.loads(out)["windows"]] == [(0, 5), (5, 10), (10, 15), (15, 20)]


def test_dir_writes_csv(trained_model_dir, clips, tmp_path, capsys):
    out_csv = tmp_path / "predictions.csv"
    write_stray_files(clips[0].parent)
    out, err = run_predict(capsys, "--dir", clips[0].parent, "--model-dir", trained_model_dir, "--csv", out_csv)
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "label", "confidence", *CLASSES, "ood_score"]
    assert sorted(r[0] for r in rows[1:]) == sorted(str(c) for c in clips)     # the comma survived quoting
    for r in rows[1:]:
        probs = [float(p) for p in r[3:-1]]
        assert r[1] in (CLASSES[int(np.argmax(probs))], "unknown") and float(r[2]) == max(probs)
        assert np.isfinite(float(r[-1]))                                      # every new model scores it
    assert len(out.strip().splitlines()) == 3 and "3 classified, 0 skipped" in err


def test_dir_skips_bad_files_with_one_line_each(trained_model_dir, tmp_path, capsys):
    write_wav(tmp_path / "good.wav", tone("moo", 1.0))
    bad = write_bad_inputs(tmp_path / "bad")
    _, err = run_predict(capsys, "--dir", tmp_path, "--model-dir", trained_model_dir)
    audio_bad = [n for n in BAD_INPUTS if n.endswith(".wav")]
    lines = err.strip().splitlines()
    for name in audio_bad:
        assert f"warning: skipping {bad[name]}: " in err and BAD_INPUTS[name] in err
    assert lines[-1] == f"1 classified, {len(audio_bad)} skipped" and len(lines) == len(audio_bad) + 1


def test_dir_errors(trained_model_dir, tmp_path, capsys):
    assert "no such folder" in exit_message(capsys, "--dir", tmp_path / "absent", "--model-dir", trained_model_dir)
    write_bad_inputs(tmp_path / "bad")
    with pytest.raises(SystemExit) as e:              # nothing usable: a non-zero exit, not a traceback
        predict.main(["--dir", str(tmp_path / "bad"), "--model-dir", str(trained_model_dir)])
    assert e.value.code == 1


@pytest.mark.parametrize("name", sorted(BAD_INPUTS) + ["absent.wav"])
def test_bad_file_exits_with_one_line_naming_it(trained_model_dir, tmp_path, capsys, name):
    path = write_bad_inputs(tmp_path).get(name, tmp_path / name)
    message = exit_message(capsys, "--file", path, "--model-dir", trained_model_dir)
    assert message.startswith(f"error: {path}: ")


def test_truncated_file_is_classified_with_a_warning(trained_model_dir, tmp_path, capsys):
    path = write_truncated_wav(tmp_path / "cut.wav", tone("moo", 1.0))
    out, err = run_predict(capsys, "--file", path, "--model-dir", trained_model_dir, "--json")
    assert json.loads(out)["label"] in CLASSES
    assert err.strip().startswith(f"warning: {path}: truncated") and len(err.strip().splitlines()) == 1


def break_config(model_dir, change):
    """Apply ``change`` to the dict in a copy's config.json (None: delete the file; a str: raw text)."""
    path = model_dir / "config.json"
    if change is None:
        path.unlink()
    elif isinstance(change, str):
        path.write_text(change)
    else:
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config))


@pytest.mark.parametrize("change, reason", [
    (None, "missing"),
    ("{not json", "incompatible model config"),
    (lambda c: c["features"].update(n_mels=64), "config says (500, 64)"),
    (lambda c: c["features"].update(version=99), "retrain"),
    (lambda c: c["features"].update(window="hann"), "unknown feature parameters"),
    (lambda c: c.update(classes=["cat"]), "at least two class names"),
    (lambda c: c.pop("classes"), "incompatible model config"),
], ids=["no-config", "bad-json", "n_mels", "version", "unknown-field", "one-class", "no-classes"])
def test_incompatible_model_dir_is_one_line(trained_model_dir, clips, tmp_path, capsys, change, reason):
    broken = shutil.copytree(trained_model_dir, tmp_path / "model")
    break_config(broken, change)
    message = exit_message(capsys, "--file", clips[0], "--model-dir", broken)
    assert str(broken) in message and reason in message


def test_missing_model_dir_is_one_line(clips, tmp_path, capsys):
    message = exit_message(capsys, "--file", clips[0], "--model-dir", tmp_path / "never-trained")
    assert f"{tmp_path / 'never-trained'}: no such model directory" in message


def test_default_model_dir_picks_best_macro_f1(tmp_path):
    root = tmp_path / "model"
    assert default_model_dir(root) == root / "enhance"                    # nothing trained yet
    (root / "baseline").mkdir(parents=True)
    (root / "baseline" / "config.json").write_text("{}")
    assert default_model_dir(root) == root / "baseline"
    for variant, f1 in (("baseline", 0.5), ("enhance", 0.7), ("alexnet", 0.9), ("baseline", 0.8)):
        (root / variant).mkdir(exist_ok=True)
        if variant != "alexnet":                                          # alexnet's directory is gone
            (root / variant / "config.json").write_text("{}")
        metrics = dict(accuracy=f1, macro_f1=f1, weighted_f1=f1, n_test=10, train_seconds=1.0)
        append_result(root / "results.csv", result_row(variant, 42, metrics, 3, root / variant))
    assert default_model_dir(root) == root / "baseline"                   # its latest run, 0.8, is best


def test_one_hour_recording_streams_window_by_window(trained_model_dir, tmp_path, capsys):
    path = tmp_path / "hour.wav"
    with sf.SoundFile(str(path), "w", 8000, 1, "PCM_U8", format="WAV") as f:   # 29 MB, written in 0.5 s
        minute = np.concatenate([tone("moo", 5.0, sr=8000), 0.01 * tone("bark", 55.0, sr=8000)])
        for _ in range(60):
            f.write(minute)
    decoded_bytes = 3600 * 16000 * 4          # the whole hour as float32 at the model rate: 230 MB
    tracemalloc.start()
    try:
        out, _ = run_predict(capsys, "--file", path, "--model-dir", trained_model_dir, "--json", "--timeline",
                             "--hop-seconds", "16")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    windows = json.loads(out)["windows"]
    assert len(windows) == 225 and windows[-1]["end"] == 3600.0
    assert peak < decoded_bytes / 4, f"peak {peak / 1e6:.0f} MB"
