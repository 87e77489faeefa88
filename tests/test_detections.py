"""core.detections: windows -> detections, Raven Pro selection tables, Audacity label tracks."""
from pathlib import Path

import pytest

from core import detections
from core.detections import AnnotationError, Window
from core.reports import atomic_write

# The Raven Pro selection-table header this toolkit writes, column for column.
RAVEN_HEADER = ("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t"
                "High Freq (Hz)\tLabel\tConfidence\tBegin File")


def W(start, end, label="bird", confidence=0.9):
    return Window(float(start), float(end), label, confidence)


# -- Window ----------------------------------------------------------------------------------------

def test_window_rejects_end_before_start_and_non_finite_times():
    with pytest.raises(ValueError):
        Window(2.0, 1.0, "bird", 0.5)
    with pytest.raises(ValueError):
        Window(0.0, float("nan"), "bird", 0.5)
    assert Window(1.0, 1.0, "bird", 0.5).end == 1.0   # a zero-length window is allowed


# -- merge_windows ---------------------------------------------------------------------------------

def test_merge_overlapping_and_touching_windows_keeps_span_and_max_confidence():
    merged = detections.merge_windows([W(0, 16, confidence=0.6), W(8, 24, confidence=0.95), W(24, 40, confidence=0.7)])
    assert merged == [W(0, 40, confidence=0.95)]


def test_merge_does_not_bridge_a_gap():
    merged = detections.merge_windows([W(0, 1), W(1.5, 2.5)])
    assert [(d.start, d.end) for d in merged] == [(0, 1), (1.5, 2.5)]


def test_merge_stops_at_another_label_even_when_windows_overlap():
    windows = [W(0, 16, "bird"), W(8, 24, "cow"), W(16, 32, "bird")]
    merged = detections.merge_windows(windows)
    assert [(d.start, d.end, d.label) for d in merged] == [(0, 16, "bird"), (8, 24, "cow"), (16, 32, "bird")]


def test_merge_sorts_by_time_and_handles_empty_input():
    merged = detections.merge_windows([W(8, 24, confidence=0.5), W(0, 16, confidence=0.8)])
    assert merged == [W(0, 24, confidence=0.8)]
    assert detections.merge_windows([]) == []


def test_merge_keeps_a_run_end_when_a_later_window_ends_earlier():
    merged = detections.merge_windows([W(0, 10), W(2, 4), W(9, 12)])
    assert [(d.start, d.end) for d in merged] == [(0, 12)]


# -- keep_detections -------------------------------------------------------------------------------

def test_keep_drops_unknown_and_windows_below_their_class_threshold():
    windows = [W(0, 1, "bird", 0.55), W(1, 2, "bird", 0.45), W(2, 3, "cow", 0.2),
               W(3, 4, "unknown", 0.99), W(4, 5, "dog", 0.01)]
    kept = detections.keep_detections(windows, {"bird": 0.5, "cow": 0.3})
    # dog has no threshold -> 0.0 -> kept; unknown is dropped whatever its score
    assert [(w.start, w.label) for w in kept] == [(0, "bird"), (4, "dog")]


def test_keep_threshold_is_inclusive():
    assert detections.keep_detections([W(0, 1, "bird", 0.5)], {"bird": 0.5}) == [W(0, 1, "bird", 0.5)]


def test_keep_min_confidence_overrides_every_class_threshold():
    windows = [W(0, 1, "bird", 0.6), W(1, 2, "cow", 0.6), W(2, 3, "dog", 0.3)]
    kept = detections.keep_detections(windows, {"bird": 0.9, "cow": 0.1}, min_confidence=0.5)
    assert [w.label for w in kept] == ["bird", "cow"]


def test_keep_then_merge_joins_windows_around_a_dropped_one():
    windows = [W(0, 2, "bird", 0.9), W(1, 3, "bird", 0.2), W(2, 4, "bird", 0.8)]
    merged = detections.merge_windows(detections.keep_detections(windows, min_confidence=0.5))
    assert merged == [W(0, 4, "bird", 0.9)]


# -- Raven selection tables ------------------------------------------------------------------------

def test_raven_table_layout():
    text = detections.raven_table([W(12.5, 15.25, "bird", 0.91234), W(1, 3, "cow", 0.5)], "rec1.wav",
                                  low_freq=100, high_freq=8000)
    lines = text.split("\n")
    assert lines[0] == RAVEN_HEADER
    assert text.endswith("\n") and lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert len(rows) == 2 and all(len(r) == 10 for r in rows)
    # sorted by time, numbered consecutively, Raven's view/channel, fixed decimals
    assert rows[0] == ["1", "Spectrogram 1", "1", "1.000000", "3.000000", "100.0", "8000.0", "cow", "0.5000",
                       "rec1.wav"]
    assert rows[1] == ["2", "Spectrogram 1", "1", "12.500000", "15.250000", "100.0", "8000.0", "bird", "0.9123",
                       "rec1.wav"]


def test_raven_table_start_selection_and_empty_table():
    text = detections.raven_table([W(0, 1), W(2, 3)], "a.wav", start_selection=7)
    assert [line.split("\t")[0] for line in text.splitlines()[1:]] == ["7", "8"]
    assert detections.raven_table([], "a.wav") == RAVEN_HEADER + "\n"


def test_raven_table_removes_tabs_and_newlines_from_cells():
    text = detections.raven_table([W(0, 1, "bird\tsong\nx")], "my\tfile.wav")
    row = text.splitlines()[1].split("\t")
    assert len(row) == 10 and row[7] == "bird song x" and row[9] == "my file.wav"


def test_raven_combined_continues_selection_numbers_with_begin_file_per_row():
    text = detections.raven_combined({"a.wav": [W(0, 1), W(5, 6)], "empty.wav": [], "site2/b.wav": [W(2, 3, "cow")]})
    lines = text.splitlines()
    assert lines[0] == RAVEN_HEADER and lines.count(RAVEN_HEADER) == 1
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[9], r[7]) for r in rows] == [("1", "a.wav", "bird"), ("2", "a.wav", "bird"),
                                                  ("3", "site2/b.wav", "cow")]


def test_raven_round_trip(tmp_path):
    dets = [W(0.123456, 2.5, "bird", 0.87654), W(3.0, 19.0, "cow", 1.0)]
    path = tmp_path / "rec1.selections.txt"
    atomic_write(path, detections.raven_table(dets, "rec1.wav", high_freq=11025))
    rows = detections.read_raven_table(path)
    assert [r["Selection"] for r in rows] == [1, 2]
    assert [(r["Begin Time (s)"], r["End Time (s)"], r["Label"]) for r in rows] == [
        (0.123456, 2.5, "bird"), (3.0, 19.0, "cow")]
    assert rows[0]["Low Freq (Hz)"] == 0.0 and rows[0]["High Freq (Hz)"] == 11025.0
    assert rows[0]["Confidence"] == pytest.approx(0.8765) and rows[0]["Begin File"] == "rec1.wav"
    assert rows[0]["View"] == "Spectrogram 1" and rows[0]["Channel"] == 1
    # and the same when handed the text instead of the path
    assert detections.read_raven_table(path.read_text()) == rows


def test_read_raven_table_missing_end_time_names_file_and_column(tmp_path):
    path = tmp_path / "rec1.Table.1.selections.txt"
    path.write_text("Selection\tView\tChannel\tBegin Time (s)\tLow Freq (Hz)\tAnnotation\n"
                    "1\tSpectrogram 1\t1\t0.5\t100\tbird\n")
    with pytest.raises(AnnotationError) as e:
        detections.read_raven_table(path)
    message = str(e.value)
    assert str(path) in message and "End Time (s)" in message and "\n" not in message


def test_read_raven_table_unparsable_number_names_file_row_and_line():
    text = (RAVEN_HEADER + "\n"
            "1\tSpectrogram 1\t1\t0.5\t1.0\t0\t8000\tbird\t0.9\ta.wav\n"
            "\n"                                                       # blank lines are skipped
            "2\tSpectrogram 1\t1\t2.0\tabc\t0\t8000\tbird\t0.9\ta.wav\n")
    with pytest.raises(AnnotationError) as e:
        detections.read_raven_table(text, source="t.txt")
    assert str(e.value) == "t.txt: row 2 (line 4): unparsable number 'abc' in 'End Time (s)'"


@pytest.mark.parametrize("bad_row, problem", [
    ("1\tSpectrogram 1\t1\t\t1.0\t0\t8000\tbird\t0.9\ta.wav", "empty 'Begin Time (s)'"),
    ("1\tSpectrogram 1\t1\tnan\t1.0\t0\t8000\tbird\t0.9\ta.wav", "non-finite"),
    ("1.5\tSpectrogram 1\t1\t0\t1.0\t0\t8000\tbird\t0.9\ta.wav", "whole number"),
    ("1\tSpectrogram 1\t1\t0\t1.0\t0\t8000\tbird\t0.9\ta.wav\textra", "11 cells"),
])
def test_read_raven_table_rejects_bad_rows(bad_row, problem):
    with pytest.raises(AnnotationError) as e:
        detections.read_raven_table(RAVEN_HEADER + "\n" + bad_row + "\n")
    assert str(e.value).startswith("<text>: row 1 (line 2): ") and problem in str(e.value)


def test_read_raven_table_tolerates_bom_case_short_rows_and_crlf(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffselection\tbegin time (s)\tEND TIME (S)\tLow Freq (Hz)\tSpecies\r\n"
                     "1\t0.5\t1.5\r\n".encode("utf-8"))
    rows = detections.read_raven_table(path)
    assert rows == [{"Selection": 1, "Begin Time (s)": 0.5, "End Time (s)": 1.5, "Low Freq (Hz)": None,
                     "Species": ""}]


def test_read_raven_table_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(AnnotationError, match="empty file"):
        detections.read_raven_table(tmp_path / "empty.txt")
    assert detections.read_raven_table(RAVEN_HEADER + "\n") == []


# -- Audacity label tracks -------------------------------------------------------------------------

def test_audacity_labels_format():
    text = detections.audacity_labels([W(12.5, 15.25, "bird", 0.9), W(1, 3, "cow\tx", 0.5)])
    assert text == "1.000000\t3.000000\tcow x\n12.500000\t15.250000\tbird\n"
    assert detections.audacity_labels([]) == ""


def test_audacity_round_trip():
    dets = [W(0.000001, 2.5, "bird"), W(3.25, 19.0, "cow")]
    labels = detections.read_audacity_labels(detections.audacity_labels(dets))
    assert [(r["start"], r["end"], r["label"]) for r in labels] == [(0.000001, 2.5, "bird"), (3.25, 19.0, "cow")]


def test_read_audacity_labels_spectral_lines_and_point_labels():
    text = ("1.000000\t1.000000\tpoint\n"
            "\\\t6928.456055\t6928.456055\n"
            "2.000000\t2.500000\tlow undefined\n"
            "\\\t-1.000000\t6334.588867\n"
            "3.000000\t3.500000\n"                  # a label without text
            "\\\tnot numbers\n")                    # malformed spectral line: ignored
    labels = detections.read_audacity_labels(text)
    assert [(r["start"], r["end"], r["label"]) for r in labels] == [
        (1.0, 1.0, "point"), (2.0, 2.5, "low undefined"), (3.0, 3.5, "")]
    assert (labels[0]["low_freq"], labels[0]["high_freq"]) == (6928.456055, 6928.456055)
    assert (labels[1]["low_freq"], labels[1]["high_freq"]) == (None, 6334.588867)
    assert (labels[2]["low_freq"], labels[2]["high_freq"]) == (None, None)
    assert [r["row"] for r in labels] == [1, 2, 3] and [r["line"] for r in labels] == [1, 3, 5]


def test_read_audacity_labels_error_names_file_row_and_line(tmp_path):
    path = tmp_path / "rec1.labels.txt"
    path.write_text("0.5\t1.0\tbird\n\\\t100\t2000\n1,5\t2.0\tcow\n")
    with pytest.raises(AnnotationError) as e:
        detections.read_audacity_labels(path)
    assert str(e.value) == f"{path}: row 2 (line 3): unparsable number '1,5' in 'start'"


def test_read_audacity_labels_accepts_whitespace_separated_hand_written_lines():
    assert detections.read_audacity_labels("0.5 1.0 song thrush\n")[0]["label"] == "song thrush"
    with pytest.raises(AnnotationError, match="row 1 \\(line 1\\)"):
        detections.read_audacity_labels("0.5\n", source="x")


# -- output files ----------------------------------------------------------------------------------

def test_output_name_per_format():
    assert detections.output_name("data/rec1.wav", "out", "raven") == Path("out/rec1.selections.txt")
    assert detections.output_name("data/rec1.wav", "out", "audacity") == Path("out/rec1.detections.txt")
    with pytest.raises(ValueError, match="unknown detections format"):
        detections.output_name("rec1.wav", "out", "csv")


def test_output_name_mirrors_subfolders_so_same_stems_do_not_collide(tmp_path):
    root = tmp_path / "recordings"
    a = detections.output_name(root / "site1" / "20230401_0600.wav", tmp_path / "out", "raven", root=root)
    b = detections.output_name(root / "site2" / "20230401_0600.wav", tmp_path / "out", "raven", root=root)
    assert a == tmp_path / "out" / "site1" / "20230401_0600.selections.txt"
    assert b == tmp_path / "out" / "site2" / "20230401_0600.selections.txt"
    with pytest.raises(ValueError, match="not under"):
        detections.output_name(tmp_path / "elsewhere" / "x.wav", tmp_path / "out", "raven", root=root)


def test_output_names_disambiguates_same_stem_in_one_folder():
    names = detections.output_names(["d/rec.wav", "d/rec.flac", "d/other.wav", "e/rec.wav"], "out", "raven",
                                    root=".")
    assert names == {Path("d/rec.wav"): Path("out/d/rec.wav.selections.txt"),
                     Path("d/rec.flac"): Path("out/d/rec.flac.selections.txt"),
                     Path("d/other.wav"): Path("out/d/other.selections.txt"),
                     Path("e/rec.wav"): Path("out/e/rec.selections.txt")}
    assert len(set(names.values())) == len(names)
