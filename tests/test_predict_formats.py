"""predict.py --dir --format: Raven Pro selection tables, Audacity label tracks, csv and json, errors file.

Each format is checked against its published layout, not against this
toolkit's own readers: Raven Pro's selection-table columns and number formats,
Audacity's ``start<TAB>end<TAB>label`` lines.
"""
import csv
import json
import re
from types import SimpleNamespace

import pytest
from conftest import tone, write_wav
from test_batch import TOY_CLASSES, write_calls, write_toy_model

import predict

# Raven Pro's standard selection-table columns, then the three this toolkit adds.
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Label", "Confidence", "Begin File"]
AUDACITY_LINE = re.compile(r"(\d+\.\d{6})\t(\d+\.\d{6})\t(\S[^\t]*)")


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """The toy model, and its recordings: 60 s with a bird call at 10-30 s and a cow at 40-56 s, two short
    clips, one broken file."""
    root = tmp_path_factory.mktemp("field")
    recordings = root / "recordings"
    write_calls(recordings / "site1" / "dawn.wav", [("chirp", 10, 30), ("moo", 40, 56)], 60.0)
    write_wav(recordings / "cow.wav", tone("moo", 2.0))
    write_wav(recordings / "site2" / "dawn.wav", tone("chirp", 3.0))     # same name as site1's: its own table
    (recordings / "broken.wav").write_bytes(b"<html>not audio</html>" * 20)
    return SimpleNamespace(model=write_toy_model(root / "model"), recordings=recordings)


def run(field, out, *flags, model=None):
    predict.main(["--dir", str(field.recordings), "--model-dir", str(model or field.model), "--workers", "1",
                  "--out", str(out), *map(str, flags)])


def raven_rows(path):
    """Rows of a Raven selection table as lists of cells, after checking its header."""
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == RAVEN_COLUMNS
    rows = [line.split("\t") for line in lines[1:]]
    for n, row in enumerate(rows, start=1):
        assert len(row) == len(RAVEN_COLUMNS) and row[1:3] == ["Spectrogram 1", "1"]
        assert re.fullmatch(r"\d+\.\d{6}", row[3]) and re.fullmatch(r"\d+\.\d{6}", row[4])
        assert float(row[3]) < float(row[4]) and (row[5], row[6]) == ("0.0", "8000.0")
        assert row[7] in TOY_CLASSES and re.fullmatch(r"[01]\.\d{4}", row[8])
    return rows


def spans(rows):
    return [(float(r[3]), float(r[4]), r[7]) for r in rows]


def covers(detections, label, start, end):
    return any(lab == label and a <= start and end <= b for a, b, lab in detections)


def test_raven_table_per_recording_with_merged_detections(field, tmp_path, capsys):
    run(field, tmp_path, "--format", "raven")
    rows = raven_rows(tmp_path / "site1" / "dawn.selections.txt")
    assert [r[0] for r in rows] == [str(n) for n in range(1, len(rows) + 1)]
    assert {r[9] for r in rows} == {"dawn.wav"}
    found = spans(rows)
    assert covers(found, "bird", 10, 30) and covers(found, "cow", 40, 56)
    assert len(found) < 7                      # 7 windows of 16 s every 8 s, merged into fewer detections
    assert spans(raven_rows(tmp_path / "site2" / "dawn.selections.txt")) == [(0.0, 3.0, "bird")]
    assert spans(raven_rows(tmp_path / "cow.selections.txt")) == [(0.0, 2.0, "cow")]
    assert not list(tmp_path.glob("broken*"))
    with open(tmp_path / "detections.errors.csv", newline="") as f:
        header, *errors = list(csv.reader(f))
    assert header == ["file", "problem"] and [e[0] for e in errors] == [str(field.recordings / "broken.wav")]
    assert errors[0][1].startswith("not readable as audio (")
    assert capsys.readouterr().err.splitlines()[-1] == (f"3 classified, 1 skipped; wrote {tmp_path}; unreadable "
                                                        f"files listed in {tmp_path / 'detections.errors.csv'}")


def test_no_merge_writes_every_window_and_min_confidence_drops_weak_ones(field, tmp_path):
    run(field, tmp_path / "all", "--format", "raven", "--no-merge")
    windows = spans(raven_rows(tmp_path / "all" / "site1" / "dawn.selections.txt"))
    assert [(a, b) for a, b, _ in windows] == [(8.0 * i, min(8.0 * i + 16, 60.0)) for i in range(7)]
    run(field, tmp_path / "sure", "--format", "raven", "--no-merge", "--min-confidence", "0.99")
    sure = raven_rows(tmp_path / "sure" / "site1" / "dawn.selections.txt")
    assert 0 < len(sure) < len(windows) and all(float(r[8]) >= 0.99 for r in sure)


def test_model_thresholds_drop_windows_and_min_confidence_overrides_them(field, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.onnx").write_bytes((field.model / "model.onnx").read_bytes())
    config = json.loads((field.model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "thresholds": {"bird": 1.01}}))
    run(field, tmp_path / "strict", "--format", "raven", "--no-merge", model=model)
    strict = spans(raven_rows(tmp_path / "strict" / "site1" / "dawn.selections.txt"))
    assert strict and "bird" not in {label for *_, label in strict}
    run(field, tmp_path / "override", "--format", "raven", "--no-merge", "--min-confidence", "0", model=model)
    assert len(raven_rows(tmp_path / "override" / "site1" / "dawn.selections.txt")) == 7


def test_combined_raven_table_numbers_selections_across_recordings(field, tmp_path):
    run(field, tmp_path, "--format", "raven", "--combined")
    rows = raven_rows(tmp_path / "detections.selections.txt")
    assert [r[0] for r in rows] == [str(n) for n in range(1, len(rows) + 1)]
    assert [r[9] for r in rows if r[0] == "1"] == ["cow.wav"]
    assert {r[9] for r in rows} == {"cow.wav", "site1/dawn.wav", "site2/dawn.wav"}
    assert not list(tmp_path.rglob("dawn.selections.txt"))


def test_audacity_label_track_per_recording(field, tmp_path):
    run(field, tmp_path, "--format", "audacity")
    lines = (tmp_path / "site1" / "dawn.detections.txt").read_text().splitlines()
    labels = [AUDACITY_LINE.fullmatch(line) for line in lines]
    assert all(labels), lines
    found = [(float(m[1]), float(m[2]), m[3]) for m in labels]
    assert covers(found, "bird", 10, 30) and covers(found, "cow", 40, 56)
    assert (tmp_path / "cow.detections.txt").read_text() == "0.000000\t2.000000\tcow\n"


def test_csv_timeline_adds_a_row_per_window(field, tmp_path):
    run(field, tmp_path, "--format", "csv", "--timeline")
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "confidence", *TOY_CLASSES, "ood_score", "start", "end"]
    dawn = [r for r in rows if r["file"] == str(field.recordings / "site1" / "dawn.wav")]
    assert [r["start"] for r in dawn] == ["", *(str(8.0 * i) for i in range(7))]
    for r in dawn[1:]:
        assert r["label"] == max(TOY_CLASSES, key=lambda c: float(r[c])) and float(r["confidence"]) == float(r[r["label"]])
    assert len(rows) == 8 + 2 + 2


def test_json_file_matches_stdout_json(field, tmp_path, capsys):
    run(field, tmp_path, "--format", "json", "--json")
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "predictions.json").read_text())
    assert written == printed and [r["file"] for r in written] == [
        str(field.recordings / name) for name in ("cow.wav", "site1/dawn.wav", "site2/dawn.wav")]
    assert set(written[0]) == {"file", "label", "confidence", "ood_score", "probabilities"}
    assert written[0]["ood_score"] is None                # the toy model has no open-set statistics


def test_default_output_folder_is_the_recordings_folder(field, tmp_path):
    folder = tmp_path / "card"
    write_wav(folder / "a.wav", tone("chirp", 1.0))
    predict.main(["--dir", str(folder), "--model-dir", str(field.model), "--format", "audacity"])
    assert (folder / "a.detections.txt").read_text() == "0.000000\t1.000000\tbird\n"
    assert not (folder / "detections.errors.csv").exists()


@pytest.mark.parametrize("flags, problem", [
    (["--format", "csv", "--combined"], "--combined applies to --format raven"),
    (["--format", "csv", "--min-confidence", "0.5"], "--min-confidence takes a value in [0, 1]"),
    (["--format", "raven", "--min-confidence", "2"], "--min-confidence takes a value in [0, 1]"),
    (["--out", "x"], "--out needs --format"),
    (["--workers", "0"], "--workers must be at least 1"),
])
def test_flag_combinations_that_make_no_sense_are_refused(field, capsys, flags, problem):
    with pytest.raises(SystemExit) as e:
        predict.main(["--dir", str(field.recordings), "--model-dir", str(field.model), *flags])
    assert e.value.code == 2 and problem in capsys.readouterr().err
