"""download_data.py --annotations: long recordings with Raven / Audacity tables -> labelled clips, split by recording."""
import csv

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write_wav

import download_data
from core.annotation_import import cut_spans, import_annotations
from core.dataset import DatasetError, recording_split

SR = 16000
RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation"
BOXES = [(3.0, 5.0, "bird"), (12.0, 14.0, "cow")]     # where each recording's two calls are


def recording(seed: int, seconds: float = 30.0) -> np.ndarray:
    """Faint noise with a chirp and a hum at the times of ``BOXES``."""
    y = 0.01 * np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)
    for (start, end, label) in BOXES:
        y[int(start * SR):int(end * SR)] += tone("chirp" if label == "bird" else "moo", end - start, seed=seed)
    return y


def raven_table(boxes, header=RAVEN_HEADER) -> str:
    rows = [f"{n}\tSpectrogram 1\t1\t{a}\t{b}\t100\t4000\t{label}" for n, (a, b, label) in enumerate(boxes, 1)]
    return "\n".join([header, *rows]) + "\n"


@pytest.fixture
def field_folder(tmp_path):
    """Six annotated recordings in two site folders (Raven tables, one Audacity label file), one not annotated."""
    root = tmp_path / "field"
    for r in range(6):
        path = write_wav(root / f"site{r % 2}" / f"rec{r}.wav", recording(r))
        if r == 5:
            path.with_suffix(".labels.txt").write_text("".join(f"{a}\t{b}\t{label}\n" for a, b, label in BOXES))
        else:
            path.with_name(f"rec{r}.Table.1.selections.txt").write_text(raven_table(BOXES))
    write_wav(root / "site0" / "unlabelled.wav", recording(9))
    return root


def manifest(data_dir):
    with open(data_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_each_box_becomes_a_padded_clip_of_the_recording(field_folder, tmp_path):
    data_dir = tmp_path / "data"
    summary = import_annotations(field_folder, data_dir, padding=0.5, test_size=0.34, seed=0)
    assert summary["recordings"] == 6 and summary["clips"] == 12 and summary["background"] == 0
    rows = manifest(data_dir)
    assert {r["class"] for r in rows} == {"bird", "cow"} and len(rows) == 12
    original = recording(2)
    row = next(r for r in rows if r["source"] == "site0/rec2.wav" and r["class"] == "bird")
    clip, sr = sf.read(data_dir / row["file"], dtype="float32")
    assert sr == SR and len(clip) == 3 * SR                                   # 2 s box + 0.5 s either side
    np.testing.assert_allclose(clip, original[int(2.5 * SR):int(5.5 * SR)], atol=1 / 32767)
    assert row["file"] == f"{row['split']}/bird/site0~rec2__000002500-000005500__bird.wav"
    assert not any("unlabelled" in r["source"] for r in rows)


def test_clips_of_one_recording_stay_on_one_side_of_the_split(field_folder, tmp_path):
    summary = import_annotations(field_folder, tmp_path / "data", test_size=0.34, seed=3)
    sides = {}
    for r in manifest(tmp_path / "data"):
        sides.setdefault(r["source"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {next(iter(s)) for s in sides.values()} == {"Training", "Test"}
    assert summary["classes"] == {"bird": {"Training": 4, "Test": 2}, "cow": {"Training": 4, "Test": 2}}


def test_copies_of_one_recording_count_as_one(field_folder, tmp_path):
    for name in ("copy_a", "copy_b"):   # rec0 again under two names: its clips must not straddle the split
        (field_folder / name).mkdir()
        (field_folder / name / "x.wav").write_bytes((field_folder / "site0" / "rec0.wav").read_bytes())
        (field_folder / name / "x.txt").write_text(raven_table(BOXES))
    for seed in range(4):
        import_annotations(field_folder, tmp_path / f"data{seed}", test_size=0.34, seed=seed)
        splits = {r["split"] for r in manifest(tmp_path / f"data{seed}")
                  if r["source"] in ("site0/rec0.wav", "copy_a/x.wav", "copy_b/x.wav")}
        assert len(splits) == 1, seed


def test_background_stretches_become_negatives_clear_of_every_box(field_folder, tmp_path):
    summary = import_annotations(field_folder, tmp_path / "data", padding=0.5, background=True, seed=0)
    background = [r for r in manifest(tmp_path / "data") if r["split"] == "Noise"]
    assert summary["background"] == len(background) == 6 * 4    # 0-2.5, 5.5-11.5, 14.5-24.5, 24.5-30 s
    for r in background:
        assert r["file"].startswith("Noise/background/") and r["class"] == "background"
        start_ms, end_ms = (int(t) for t in r["file"].split("__")[1].split("-"))
        assert all(end_ms <= (a - 0.5) * 1000 or start_ms >= (b + 0.5) * 1000 for a, b, _ in BOXES)
        assert 2.0 <= sf.info(tmp_path / "data" / r["file"]).duration <= 10.0


@pytest.mark.parametrize("table, problem", [
    (raven_table(BOXES, RAVEN_HEADER.replace("\tEnd Time (s)", "")), "header (line 1): missing column 'End Time (s)'"),
    (raven_table([*BOXES, (28.0, 45.0, "bird")]), "row 3: end 45 s is beyond the recording's 30 s"),
], ids=["missing-column", "beyond-the-file"])
def test_a_bad_table_is_one_line_naming_file_and_row_and_the_rest_is_imported(field_folder, tmp_path, capsys,
                                                                             table, problem):
    bad = field_folder / "site1" / "rec1.Table.1.selections.txt"
    bad.write_text(table)
    summary = import_annotations(field_folder, tmp_path / "data", seed=0)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {bad}: {problem} ({field_folder / 'site1' / 'rec1.wav'} skipped)"]
    assert summary["rejected"] == 1 and summary["recordings"] == 5 and summary["clips"] == 10


def test_a_failed_import_leaves_the_previous_data_intact(field_folder, tmp_path):
    data_dir = tmp_path / "data"
    import_annotations(field_folder, data_dir, seed=0)
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    with pytest.raises(DatasetError, match="already holds data; pass --force"):
        import_annotations(field_folder, data_dir, seed=1)
    for table in field_folder.rglob("*.txt"):
        table.write_text(raven_table([(1.0, 99.0, "bird")]))
    with pytest.raises(DatasetError, match="no annotated box to import"):
        import_annotations(field_folder, data_dir, seed=1, force=True)
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before


def test_download_data_annotations_command(field_folder, tmp_path, capsys):
    download_data.main(["--annotations", str(field_folder), "--data-dir", str(tmp_path / "data"),
                        "--padding", "0.25", "--background", "--test-size", "0.34", "--seed", "0"])
    out = capsys.readouterr().out
    assert "12 clips cut from 6 recordings" in out and "24 background clips" in out
    clip = next((tmp_path / "data" / "Training" / "cow").iterdir())
    assert sf.info(clip).duration == pytest.approx(2.5)
    with pytest.raises(SystemExit) as e:
        download_data.main(["--annotations", str(tmp_path / "absent"), "--data-dir", str(tmp_path / "d2")])
    assert str(e.value.code) == f"error: {tmp_path / 'absent'}: no such folder"


def test_cut_spans_decodes_once_in_start_order_with_overlaps_and_a_span_past_the_end(tmp_path):
    y = np.arange(10 * SR, dtype=np.float32) / (10 * SR)
    path = write_wav(tmp_path / "ramp.wav", y, subtype="FLOAT")
    spans = [(4.0, 6.0, "b"), (1.0, 5.0, "a"), (9.5, 10.2, "c")]
    cuts = list(cut_spans(path, spans))
    assert [i for i, _ in cuts] == [1, 0, 2]
    for i, audio in cuts:
        start, end, _ = spans[i]
        np.testing.assert_array_equal(audio, y[int(start * SR):int(end * SR)])


def test_recording_split_keeps_groups_whole_across_classes():
    labels = ["bird", "cow"] * 10 + ["frog"]
    groups = [f"rec{i // 2}" for i in range(20)] + ["rec0"]      # each recording holds a bird and a cow
    held = recording_split(labels, groups, 0.3, seed=1)
    for g in set(groups):
        assert len({held[i] for i, x in enumerate(groups) if x == g}) == 1
    assert 2 <= held[:20].sum() // 2 <= 3                        # about 30 % of each class
    assert not held[20] and not held[0]                          # frog's only recording stays in training
    np.testing.assert_array_equal(held, recording_split(labels, groups, 0.3, seed=1))
