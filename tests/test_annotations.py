"""core.annotations: Raven/Audacity annotation tables -> spans and names of labelled training clips."""
import re
from pathlib import Path

import pytest

from core import annotations, detections
from core.annotations import Annotation, AnnotationError
from core.detections import Window

# Raven Pro's selection-table columns, as Raven writes them, with its default annotation column.
RAVEN_HEADER = ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t"
                "High Freq (Hz)\tAnnotation")


def raven_text(*rows, header=RAVEN_HEADER):
    return "\n".join([header, *("\t".join(str(c) for c in r) for r in rows)]) + "\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def spans(result):
    return [(round(a, 6), round(b, 6), label) for a, b, label in result]


def test_annotation_error_is_one_class_shared_with_detections():
    assert annotations.AnnotationError is detections.AnnotationError
    assert issubclass(AnnotationError, ValueError)


# -- read_annotations ------------------------------------------------------------------------------

def test_read_raven_selection_table(tmp_path):
    path = write(tmp_path / "rec1.Table.1.selections.txt", raven_text(
        (1, "Spectrogram 1", 1, 1.25, 2.5, 2000, 4000, "bird"),
        (2, "Spectrogram 1", 1, 10, 12, "", "", "cow")))
    got = annotations.read_annotations(path)
    assert got == [Annotation(1.25, 2.5, "bird", 2000.0, 4000.0), Annotation(10.0, 12.0, "cow", None, None)]
    assert [(a.source, a.row) for a in got] == [(str(path), 1), (str(path), 2)]


@pytest.mark.parametrize("column", ["Annotation", "label", "SPECIES", "Class"])
def test_read_raven_accepts_each_label_column_name(tmp_path, column):
    header = f"Selection\tBegin Time (s)\tEnd Time (s)\tNotes\t{column}"
    path = write(tmp_path / "t.txt", raven_text((1, 0.5, 1.0, "faint", "owl"), header=header))
    assert [a.label for a in annotations.read_annotations(path)] == ["owl"]


def test_read_raven_prefers_annotation_over_other_label_columns(tmp_path):
    header = "Selection\tBegin Time (s)\tEnd Time (s)\tClass\tAnnotation"
    path = write(tmp_path / "t.txt", raven_text((1, 0.5, 1.0, "bird", "Turdus merula"), header=header))
    assert annotations.read_annotations(path)[0].label == "Turdus merula"


def test_read_raven_keeps_one_row_per_selection_across_views(tmp_path):
    # Raven lists a selection once per view when the window shows waveform and spectrogram.
    path = write(tmp_path / "t.txt", raven_text(
        (1, "Waveform 1", 1, 1.0, 2.0, 0, 0, "bird"),
        (1, "Spectrogram 1", 1, 1.0, 2.0, 1500, 3000, "bird"),
        (2, "Waveform 1", 1, 5.0, 6.0, 0, 0, "cow")))
    got = annotations.read_annotations(path)
    assert got == [Annotation(1.0, 2.0, "bird", 1500.0, 3000.0), Annotation(5.0, 6.0, "cow", 0.0, 0.0)]
    assert [a.row for a in got] == [2, 3]


def test_read_raven_missing_end_time_column_errors(tmp_path):
    header = "Selection\tView\tChannel\tBegin Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation"
    path = write(tmp_path / "rec1.Table.1.selections.txt", raven_text((1, "Spectrogram 1", 1, 0.5, 0, 8000, "bird"),
                                                                      header=header))
    with pytest.raises(AnnotationError, match=r"missing column 'End Time \(s\)'") as e:
        annotations.read_annotations(path)
    assert str(path) in str(e.value)


def test_read_raven_without_label_column_or_with_empty_label_errors(tmp_path):
    no_label = write(tmp_path / "a.txt", raven_text((1, 0.5, 1.0, "x"),
                                                    header="Selection\tBegin Time (s)\tEnd Time (s)\tNotes"))
    with pytest.raises(AnnotationError, match="no label column"):
        annotations.read_annotations(no_label)
    empty = write(tmp_path / "b.txt", raven_text((1, "Spectrogram 1", 1, 0.5, 1, 0, 8000, "bird"),
                                                 (2, "Spectrogram 1", 1, 2.0, 3, 0, 8000, "")))
    with pytest.raises(AnnotationError, match=rf"^{re.escape(str(empty))}: row 2: empty label"):
        annotations.read_annotations(empty)


def test_read_audacity_label_file(tmp_path):
    path = write(tmp_path / "rec1.labels.txt", "1.000000\t2.500000\tbird\n\\\t1500\t4000\n3.0\t4.0\tcow\n")
    got = annotations.read_annotations(path)
    assert got == [Annotation(1.0, 2.5, "bird", 1500.0, 4000.0), Annotation(3.0, 4.0, "cow")]
    assert [a.row for a in got] == [1, 2]


def test_read_audacity_empty_label_names_row_and_line(tmp_path):
    path = write(tmp_path / "rec1.txt", "1.0\t2.0\tbird\n\\\t1\t2\n3.0\t4.0\n")
    with pytest.raises(AnnotationError, match=r"rec1\.txt: row 2 \(line 3\): empty label"):
        annotations.read_annotations(path)


def test_read_annotations_rejects_other_text_and_accepts_empty(tmp_path):
    with pytest.raises(AnnotationError, match="neither a Raven selection table"):
        annotations.read_annotations(write(tmp_path / "notes.txt", "recorded by AudioMoth\n"))
    assert annotations.read_annotations(write(tmp_path / "empty.txt", "\n")) == []


def test_detections_reviewed_in_raven_become_annotations(tmp_path):
    # The review loop: model output -> saved by Raven under its default name -> training labels.
    table = detections.raven_table([Window(1.0, 3.0, "bird", 0.8)], "rec1.wav")
    path = write(tmp_path / "rec1.Table.1.selections.txt", table)
    assert annotations.read_annotations(path) == [Annotation(1.0, 3.0, "bird", 0.0, 8000.0)]


# -- find_annotation_tables ------------------------------------------------------------------------

def test_find_annotation_tables_pairs_recordings_with_tables_beside_them(tmp_path):
    for name in ["rec1.wav", "rec1.Table.1.selections.txt", "site/rec2.WAV", "site/rec2.labels.txt",
                 "site/rec3.flac", "site/rec3.txt", "rec4.wav", "rec4.selections.txt", "rec4.detections.txt",
                 "rec5.mp3", "other/rec5.txt", "._rec1.wav", ".hidden/rec6.wav", "readme.txt"]:
        write(tmp_path / name, "x")
    pairs, unannotated = annotations.find_annotation_tables(tmp_path)
    assert pairs == [(tmp_path / "rec1.wav", tmp_path / "rec1.Table.1.selections.txt"),
                     (tmp_path / "site/rec2.WAV", tmp_path / "site/rec2.labels.txt"),
                     (tmp_path / "site/rec3.flac", tmp_path / "site/rec3.txt")]
    # rec4: our own unreviewed output is not ground truth; rec5: the table is in another folder
    assert unannotated == [tmp_path / "rec4.wav", tmp_path / "rec5.mp3"]


def test_find_annotation_tables_refuses_to_guess_between_two_tables(tmp_path):
    for name in ["rec1.wav", "rec1.Table.1.selections.txt", "rec1.Table.2.selections.txt"]:
        write(tmp_path / name, "x")
    with pytest.raises(AnnotationError, match="several annotation tables") as e:
        annotations.find_annotation_tables(tmp_path)
    assert "rec1.Table.1.selections.txt" in str(e.value) and "rec1.Table.2.selections.txt" in str(e.value)


def test_find_annotation_tables_matches_the_stem_exactly(tmp_path):
    for name in ["rec1.wav", "rec10.txt", "rec1.5.wav", "rec1.5.txt"]:
        write(tmp_path / name, "x")
    pairs, unannotated = annotations.find_annotation_tables(tmp_path)
    assert pairs == [(tmp_path / "rec1.5.wav", tmp_path / "rec1.5.txt")]
    assert unannotated == [tmp_path / "rec1.wav"]


# -- clip_spans ------------------------------------------------------------------------------------

def test_clip_spans_pad_both_sides_and_clip_to_the_file():
    boxes = [Annotation(0.2, 1.0, "bird"), Annotation(5.0, 6.0, "cow"), Annotation(9.8, 10.0, "dog")]
    assert spans(annotations.clip_spans(boxes, duration=10.0, padding=0.5)) == [
        (0.0, 1.5, "bird"), (4.5, 6.5, "cow"), (9.3, 10.0, "dog")]
    assert spans(annotations.clip_spans(boxes, 10.0, padding=0)) == [
        (0.2, 1.0, "bird"), (5.0, 6.0, "cow"), (9.8, 10.0, "dog")]


def test_clip_spans_tolerate_rounding_at_the_file_end():
    assert spans(annotations.clip_spans([Annotation(9.0, 10.0009, "bird")], 10.0)) == [(8.5, 10.0, "bird")]


@pytest.mark.parametrize("box, problem", [
    (Annotation(2.0, 2.0, "bird", source="t.txt", row=4), "t.txt: row 4: end 2 s is not after start 2 s"),
    (Annotation(3.0, 2.0, "bird", source="t.txt", row=4), "t.txt: row 4: end 2 s is not after start 3 s"),
    (Annotation(-0.1, 2.0, "bird", source="t.txt", row=4), "t.txt: row 4: negative start -0.1 s"),
    (Annotation(9.0, 10.01, "bird", source="t.txt", row=4), "t.txt: row 4: end 10.01 s is beyond the recording's 10 s"),
    (Annotation(3.0, 2.0, "bird"), "annotation 2: end 2 s is not after start 3 s"),
])
def test_clip_spans_reject_bad_boxes_naming_file_and_row(box, problem):
    with pytest.raises(AnnotationError) as e:
        annotations.clip_spans([Annotation(0, 1, "ok"), box] if box.source is None else [box], 10.0)
    assert str(e.value) == problem


def test_clip_spans_error_names_the_table_row_read_from_file(tmp_path):
    path = write(tmp_path / "rec1.Table.1.selections.txt", raven_text(
        (1, "Spectrogram 1", 1, 1.0, 2.0, 0, 8000, "bird"),
        (2, "Spectrogram 1", 1, 58.0, 61.5, 0, 8000, "cow")))
    with pytest.raises(AnnotationError) as e:
        annotations.clip_spans(annotations.read_annotations(path), duration=60.0)
    assert str(e.value) == f"{path}: row 2: end 61.5 s is beyond the recording's 60 s"


def test_clip_spans_argument_checks():
    with pytest.raises(ValueError):
        annotations.clip_spans([], duration=0)
    with pytest.raises(ValueError):
        annotations.clip_spans([], duration=10, padding=-1)
    assert annotations.clip_spans([], 10.0) == []


# -- background_spans ------------------------------------------------------------------------------

def test_background_spans_between_padded_boxes():
    boxes = [Annotation(5.0, 6.0, "bird"), Annotation(20.0, 21.0, "cow")]
    got = spans(annotations.background_spans(boxes, duration=30.0, min_seconds=2, max_seconds=10, padding=0.5))
    # gaps: [0, 4.5], [6.5, 19.5], [21.5, 30]
    assert got == [(0.0, 4.5, "background"), (6.5, 16.5, "background"), (16.5, 19.5, "background"),
                   (21.5, 30.0, "background")]
    for start, end, _ in got:
        assert 2 <= end - start <= 10
        assert all(end <= a.start - 0.5 or start >= a.end + 0.5 for a in boxes)


def test_background_spans_drop_a_short_remainder_and_short_gaps():
    boxes = [Annotation(3.0, 4.0, "bird")]   # gaps: [0, 2.5] and [4.5, 25.5]
    got = spans(annotations.background_spans(boxes, 25.5, min_seconds=3, max_seconds=10, padding=0.5))
    # [0, 2.5] is shorter than 3 s; [4.5, 25.5] -> two 10 s pieces, the 1 s remainder is dropped
    assert got == [(4.5, 14.5, "background"), (14.5, 24.5, "background")]


def test_background_spans_merge_overlapping_boxes_and_cover_an_unannotated_file():
    boxes = [Annotation(2.0, 8.0, "bird"), Annotation(3.0, 4.0, "cow"), Annotation(7.5, 9.0, "dog")]
    got = spans(annotations.background_spans(boxes, 12.0, min_seconds=1, max_seconds=10, padding=0.5))
    assert got == [(0.0, 1.5, "background"), (9.5, 12.0, "background")]
    assert spans(annotations.background_spans([], 25.0, 2, 10, label="noise")) == [
        (0.0, 10.0, "noise"), (10.0, 20.0, "noise"), (20.0, 25.0, "noise")]


def test_background_spans_validate_boxes_and_bounds():
    with pytest.raises(AnnotationError, match="t.txt: row 1: end 31 s is beyond"):
        annotations.background_spans([Annotation(29, 31, "bird", source="t.txt", row=1)], 30.0)
    with pytest.raises(ValueError):
        annotations.background_spans([], 30.0, min_seconds=5, max_seconds=2)


# -- clip names ------------------------------------------------------------------------------------

def test_clip_file_name_is_deterministic_sortable_and_safe():
    name = annotations.clip_file_name("data/site1/rec1.wav", 12.5, 15.0, "bird")
    assert name == "rec1__000012500-000015000__bird.wav"
    assert annotations.clip_file_name(Path("data/site1/rec1.wav"), 12.5, 15.0, "bird") == name
    odd = annotations.clip_file_name("x/we:ird?.wav", 0.0004, 1.0, 'Strix/aluco "tawny"')
    assert odd == "we_ird___000000000-000001000__Strix_aluco _tawny_.wav"
    assert not set('<>:"/\\|?*') & set(odd)


def test_clip_file_name_with_root_keeps_same_stems_from_different_sites_apart(tmp_path):
    a = annotations.clip_file_name(tmp_path / "site1" / "0600.wav", 1, 2, "bird", root=tmp_path)
    b = annotations.clip_file_name(tmp_path / "site2" / "0600.wav", 1, 2, "bird", root=tmp_path)
    assert a == "site1~0600__000001000-000002000__bird.wav" and a != b
    assert annotations.recording_group(a) == "site1~0600"


def test_clip_file_name_rejects_negative_or_reversed_spans():
    with pytest.raises(ValueError):
        annotations.clip_file_name("rec1.wav", -1, 2, "bird")
    with pytest.raises(ValueError):
        annotations.clip_file_name("rec1.wav", 3, 2, "bird")


@pytest.mark.parametrize("stem, label", [("rec1", "bird"), ("2023__04__01", "owl"), ("rec1", "a__b"),
                                         ("rec__000000001-000000002__x", "bird"), ("r", "__")])
def test_recording_group_returns_the_recording_stem(stem, label):
    name = annotations.clip_file_name(f"d/{stem}.wav", 1.0, 2.0, label)
    assert annotations.recording_group(name) == stem
    assert annotations.recording_group(Path("train/bird") / name) == stem


def test_recording_group_rejects_foreign_names():
    for name in ["bird_3.wav", "rec1__12-15__bird.wav", "rec1__000012500-000015000__bird.flac"]:
        with pytest.raises(ValueError, match="not a clip name"):
            annotations.recording_group(name)


def test_clip_spans_and_names_from_a_table_end_to_end(tmp_path):
    write(tmp_path / "rec1.wav", "x")
    write(tmp_path / "rec1.Table.1.selections.txt", raven_text((1, "Spectrogram 1", 1, 0.25, 1.5, 0, 8000, "bird")))
    [(recording, table)], _ = annotations.find_annotation_tables(tmp_path)
    [(start, end, label)] = annotations.clip_spans(annotations.read_annotations(table), duration=30.0)
    name = annotations.clip_file_name(recording, start, end, label)
    assert name == "rec1__000000000-000002000__bird.wav" and annotations.recording_group(name) == "rec1"
