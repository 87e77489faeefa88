"""Per-window predictions -> detection files that ecologists open in Raven Pro or Audacity.

The classifier labels fixed analysis windows of a long recording. This module
turns those windows into *detections* (runs of one label) and reads and writes
the two table formats field ecologists review them in:

- **Raven Pro selection table**: tab-separated, one header line, one row per
  selection. Columns written here, in order::

      Selection  View  Channel  Begin Time (s)  End Time (s)  Low Freq (Hz)
      High Freq (Hz)  Label  Confidence  Begin File

- **Audacity label track** (File > Export Other > Export Labels): one
  ``start<TAB>end<TAB>label`` line per label, times in seconds with six
  decimals. Audacity's optional "extended" style follows a label with a
  spectral-selection line ``\\<TAB>low_hz<TAB>high_hz`` (``-1`` = undefined).

Number formats (fixed so that files diff cleanly and round-trip exactly):

- times: 6 decimals (1 us), as Audacity writes them, and finer than one
  sample at any rate up to 1 MHz, so reading a table back loses nothing;
- frequencies: 1 decimal; confidence: 4 decimals.

Labels and file names are written with tabs and line breaks replaced by
spaces, because both formats have no quoting: a tab inside a label would
shift every later column.

All functions here are pure text/number code: no audio is decoded, callers
pass times and durations. :class:`AnnotationError` is defined here, next to
the readers that raise it, and re-exported by :mod:`core.annotations`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AUDACITY_SUFFIX",
    "RAVEN_COLUMNS",
    "RAVEN_SUFFIX",
    "UNKNOWN_LABEL",
    "AnnotationError",
    "Window",
    "audacity_labels",
    "keep_detections",
    "merge_windows",
    "output_name",
    "output_names",
    "raven_combined",
    "raven_table",
    "read_audacity_labels",
    "read_raven_table",
]

UNKNOWN_LABEL = "unknown"

# -- format constants ------------------------------------------------------------------------------

BEGIN_TIME, END_TIME = "Begin Time (s)", "End Time (s)"
LOW_FREQ, HIGH_FREQ = "Low Freq (Hz)", "High Freq (Hz)"
RAVEN_COLUMNS = ("Selection", "View", "Channel", BEGIN_TIME, END_TIME, LOW_FREQ, HIGH_FREQ,
                 "Label", "Confidence", "Begin File")
RAVEN_VIEW = "Spectrogram 1"
RAVEN_CHANNEL = 1
TIME_DECIMALS = 6
FREQ_DECIMALS = 1
CONFIDENCE_DECIMALS = 4
# Nyquist frequency of the model's 16 kHz input: the band the classifier actually saw.
DEFAULT_HIGH_FREQ = 8000.0

# Columns read back as numbers (when present); the rest stay strings.
_RAVEN_FLOAT_COLUMNS = (BEGIN_TIME, END_TIME, LOW_FREQ, HIGH_FREQ, "Confidence")
_RAVEN_INT_COLUMNS = ("Selection", "Channel")
_RAVEN_REQUIRED = (BEGIN_TIME, END_TIME)

# Output file names (see output_name for why they differ from annotation-table names).
RAVEN_SUFFIX = ".selections.txt"
AUDACITY_SUFFIX = ".detections.txt"
_SUFFIXES = {"raven": RAVEN_SUFFIX, "audacity": AUDACITY_SUFFIX}


class AnnotationError(ValueError):
    """A selection table or label file that cannot be read or does not fit its recording.

    The message is one line and names the file and, where it applies, the
    1-based data row (header excluded) and the text line, e.g.
    ``site1/rec1.Table.1.selections.txt: row 3 (line 4): unparsable number 'x' in 'End Time (s)'``.
    """


@dataclass(frozen=True)
class Window:
    """One labelled stretch of a recording: an analysis window, or a merged detection.

    Parameters
    ----------
    start, end : float
        Seconds from the start of the recording; ``end >= start``.
    label : str
        Class name, or ``"unknown"`` when the classifier abstained.
    confidence : float
        The classifier's score for ``label`` (typically a probability in [0, 1]).
    """
    start: float
    end: float
    label: str
    confidence: float

    def __post_init__(self):
        if not (math.isfinite(self.start) and math.isfinite(self.end)) or self.end < self.start:
            raise ValueError(f"window needs finite start <= end, got {self.start!r}..{self.end!r}")


# -- windows -> detections -------------------------------------------------------------------------

def keep_detections(windows: Iterable[Window], thresholds: Mapping[str, float] | None = None,
                    min_confidence: float | None = None) -> list[Window]:
    """Drop abstentions and windows scored below their class threshold.

    Parameters
    ----------
    windows : iterable of Window
    thresholds : mapping of str to float, optional
        Per-class minimum confidence; a class not listed gets 0.0 (kept).
    min_confidence : float, optional
        One minimum for every class; when given, ``thresholds`` is ignored.

    Returns
    -------
    list of Window
        The windows, in input order, whose label is not ``"unknown"`` and whose
        confidence is ``>=`` the applicable threshold (inclusive).

    Notes
    -----
    Apply this *before* :func:`merge_windows`: merging keeps the best window's
    confidence, so merging first would let one confident window carry a long
    run of weak ones past the threshold.
    """
    thresholds = thresholds or {}
    kept = []
    for w in windows:
        if w.label == UNKNOWN_LABEL:
            continue
        threshold = min_confidence if min_confidence is not None else thresholds.get(w.label, 0.0)
        if w.confidence >= threshold:
            kept.append(w)
    return kept


def merge_windows(windows: Iterable[Window]) -> list[Window]:
    """Merge runs of consecutive same-label windows into detections.

    Windows are taken in order of ``(start, end)``. A window joins the current
    detection when it has the same label and starts no later than the
    detection ends (``next.start <= current.end``: overlapping or touching).

    Parameters
    ----------
    windows : iterable of Window

    Returns
    -------
    list of Window
        One per run, spanning the first window's start to the furthest end in
        the run, with the run's **maximum** confidence. The maximum is used
        because a call is as certain as its best view of it: windows at a
        call's edges hold only part of it and score lower, so a mean would
        penalise long calls for their length.

    Notes
    -----
    "Consecutive" is strict: a different label in between (including
    ``"unknown"``) ends the run, so detections of different labels may overlap
    in time when windows overlap.
    """
    merged: list[Window] = []
    for w in sorted(windows, key=lambda w: (w.start, w.end)):
        last = merged[-1] if merged else None
        if last is not None and w.label == last.label and w.start <= last.end:
            merged[-1] = Window(last.start, max(last.end, w.end), last.label,
                                max(last.confidence, w.confidence))
        else:
            merged.append(w)
    return merged


# -- Raven Pro selection tables --------------------------------------------------------------------

def _clean_cell(text: str) -> str:
    # Neither format quotes fields, so separators inside a value must go.
    return re.sub(r"[\t\r\n]+", " ", str(text)).strip()


def _raven_rows(detections: Sequence[Window], begin_file: str, low_freq: float, high_freq: float,
                first_selection: int) -> list[str]:
    rows = []
    for n, d in enumerate(sorted(detections, key=lambda d: (d.start, d.end)), start=first_selection):
        rows.append("\t".join([
            str(n), RAVEN_VIEW, str(RAVEN_CHANNEL),
            f"{d.start:.{TIME_DECIMALS}f}", f"{d.end:.{TIME_DECIMALS}f}",
            f"{low_freq:.{FREQ_DECIMALS}f}", f"{high_freq:.{FREQ_DECIMALS}f}",
            _clean_cell(d.label), f"{d.confidence:.{CONFIDENCE_DECIMALS}f}", _clean_cell(begin_file),
        ]))
    return rows


def raven_table(detections: Sequence[Window], begin_file: str, low_freq: float = 0.0,
                high_freq: float = DEFAULT_HIGH_FREQ, start_selection: int = 1) -> str:
    """Render detections of one recording as a Raven Pro selection table.

    Parameters
    ----------
    detections : sequence of Window
        Written in order of ``(start, end)``.
    begin_file : str
        Value of the ``Begin File`` column: the recording's file name as the
        reviewer will see it (Raven shows the bare name, not a path).
    low_freq, high_freq : float
        The box's frequency band in Hz, the same for every row (the classifier
        does not localise in frequency). Default: 0 Hz to 8 kHz, the Nyquist
        band of the model's 16 kHz input.
    start_selection : int
        Number of the first selection; the rest follow consecutively.

    Returns
    -------
    str
        Header line ``Selection<TAB>View<TAB>...<TAB>Begin File`` (see
        :data:`RAVEN_COLUMNS`) and one row per detection, each ending in
        ``\\n``; View is ``Spectrogram 1``, Channel is 1, times have 6 decimals.
    """
    rows = _raven_rows(detections, begin_file, low_freq, high_freq, start_selection)
    return "\n".join(["\t".join(RAVEN_COLUMNS), *rows]) + "\n"


def raven_combined(per_file: Mapping[str, Sequence[Window]], low_freq: float = 0.0,
                   high_freq: float = DEFAULT_HIGH_FREQ) -> str:
    """Render detections of several recordings as one Raven Pro selection table.

    Parameters
    ----------
    per_file : mapping of str to sequence of Window
        ``Begin File`` value -> that recording's detections. Files appear in
        mapping order; a file without detections contributes no row.
    low_freq, high_freq : float
        As in :func:`raven_table`.

    Returns
    -------
    str
        One header and the rows of every file, selections numbered 1..N
        across the whole table.

    Notes
    -----
    Begin/End Time are seconds **within Begin File**, not Raven's
    file-sequence time (which counts from the start of the first file when
    several files are opened as one sequence). The table is meant for
    sorting and filtering; to review boxes in Raven, open the per-recording
    tables.
    """
    rows, next_selection = [], 1
    for begin_file, detections in per_file.items():
        file_rows = _raven_rows(detections, begin_file, low_freq, high_freq, next_selection)
        rows += file_rows
        next_selection += len(file_rows)
    return "\n".join(["\t".join(RAVEN_COLUMNS), *rows]) + "\n"


def _read_source(path_or_text, source: str | None) -> tuple[str, str]:
    """(text, name for messages) from a path or from the table's text itself.

    A ``str`` holding a tab or a line break is taken as the text (no sensible
    path contains either); any other ``str`` or ``os.PathLike`` is a path.
    """
    if isinstance(path_or_text, str) and ("\n" in path_or_text or "\t" in path_or_text):
        return path_or_text.lstrip("\ufeff"), source or "<text>"
    path = Path(path_or_text)
    try:
        # utf-8-sig: Windows editors (and Excel's "Unicode text") may prepend a byte-order mark.
        return path.read_text(encoding="utf-8-sig"), source or str(path)
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{source or path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _parse_number(cell: str, column: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise AnnotationError(f"{where}: unparsable number {cell!r} in {column!r}") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: non-finite number {cell!r} in {column!r}")
    return value


def read_raven_table(path_or_text, source: str | None = None) -> list[dict]:
    """Read a Raven selection table into one dict per data row.

    Parameters
    ----------
    path_or_text : str or os.PathLike
        The table's path, or its text (any ``str`` containing a tab or a line
        break is taken as text).
    source : str, optional
        Name used in error messages; default: the path, or ``"<text>"``.

    Returns
    -------
    list of dict
        In file order, keyed by the header's column names. The standard
        columns are matched case-insensitively and returned under their
        canonical names (:data:`RAVEN_COLUMNS`); ``Begin Time (s)``,
        ``End Time (s)``, ``Low Freq (Hz)``, ``High Freq (Hz)`` and
        ``Confidence`` become ``float`` (``None`` when empty and optional),
        ``Selection`` and ``Channel`` become ``int``; other cells stay ``str``,
        stripped of surrounding whitespace.

    Raises
    ------
    AnnotationError
        Empty file; header lacking ``Begin Time (s)`` or ``End Time (s)``;
        a row with more cells than the header; an empty or unparsable number.
        The one-line message names the file, the 1-based data row and line.

    Notes
    -----
    Cells are split on tabs only, never unquoted: Raven does not quote, and a
    quote character is legitimate inside an annotation. Rows shorter than the
    header are padded with empty cells (trailing empty annotations). Blank
    lines are skipped. Raven writes one row per selection *and view*, so a
    table from a window with both a waveform and a spectrogram lists each
    selection twice; this reader returns all rows as they are.
    """
    text, name = _read_source(path_or_text, source)
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise AnnotationError(f"{name}: empty file, expected a Raven header line")
    canonical = {c.lower(): c for c in RAVEN_COLUMNS}
    header = [canonical.get(h.strip().lower(), h.strip()) for h in lines[header_at].split("\t")]
    for column in _RAVEN_REQUIRED:
        if column not in header:
            raise AnnotationError(f"{name}: header (line {header_at + 1}): missing column {column!r}")
    rows, row_number = [], 0
    for line_number, line in enumerate(lines[header_at + 1:], start=header_at + 2):
        if not line.strip():
            continue
        row_number += 1
        where = f"{name}: row {row_number} (line {line_number})"
        cells = line.split("\t")
        if len(cells) > len(header):
            raise AnnotationError(f"{where}: {len(cells)} cells but the header has {len(header)} columns")
        cells += [""] * (len(header) - len(cells))
        row = {}
        for column, cell in zip(header, cells):
            cell = cell.strip()
            if column in _RAVEN_FLOAT_COLUMNS or column in _RAVEN_INT_COLUMNS:
                if not cell:
                    if column in _RAVEN_REQUIRED:
                        raise AnnotationError(f"{where}: empty {column!r}")
                    row[column] = None
                    continue
                value = _parse_number(cell, column, where)
                if column in _RAVEN_INT_COLUMNS:
                    if value != int(value):
                        raise AnnotationError(f"{where}: {column!r} must be a whole number, got {cell!r}")
                    value = int(value)
                row[column] = value
            else:
                row[column] = cell
        rows.append(row)
    return rows


# -- Audacity label tracks -------------------------------------------------------------------------

def audacity_labels(detections: Sequence[Window]) -> str:
    """Render detections as an Audacity label track (File > Import > Labels).

    Parameters
    ----------
    detections : sequence of Window
        Written in order of ``(start, end)``.

    Returns
    -------
    str
        One ``start<TAB>end<TAB>label`` line per detection, times with 6
        decimals as Audacity exports them, each line ending in ``\\n``. The
        confidence is not written: Audacity labels carry only text, and a
        score inside it would turn into a new class if the file were read
        back as annotations.
    """
    return "".join(f"{d.start:.{TIME_DECIMALS}f}\t{d.end:.{TIME_DECIMALS}f}\t{_clean_cell(d.label)}\n"
                   for d in sorted(detections, key=lambda d: (d.start, d.end)))


def _is_spectral_line(line: str) -> bool:
    # Audacity's extended style: "\<TAB>low<TAB>high" under the label it belongs to.
    return line.startswith(("\\", "\t"))


def read_audacity_labels(path_or_text, source: str | None = None) -> list[dict]:
    """Read an Audacity label file into one dict per label.

    Parameters
    ----------
    path_or_text : str or os.PathLike
        The file's path, or its text (see :func:`read_raven_table`).
    source : str, optional
        Name used in error messages; default: the path, or ``"<text>"``.

    Returns
    -------
    list of dict
        In file order, with keys ``start``, ``end`` (float seconds), ``label``
        (str, ``""`` when absent), ``low_freq``, ``high_freq`` (float Hz or
        ``None``), ``row`` (1-based label number) and ``line`` (1-based line).

    Raises
    ------
    AnnotationError
        A label line with fewer than two fields or an unparsable time; the
        one-line message names the file, row and line.

    Notes
    -----
    Spectral-selection lines (starting with a backslash or a tab) are not
    labels. When they hold two numbers they set the preceding label's
    ``low_freq``/``high_freq`` (Audacity's ``-1``, "undefined", becomes
    ``None``); otherwise they are ignored. Fields are split on tabs; a line
    without tabs is split on whitespace, for hand-written files.
    """
    text, name = _read_source(path_or_text, source)
    labels: list[dict] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if _is_spectral_line(line):
            freqs = line.lstrip("\\").split()
            if labels and len(freqs) == 2:
                try:
                    low, high = (float(f) for f in freqs)
                except ValueError:
                    continue
                labels[-1]["low_freq"] = low if low >= 0 else None
                labels[-1]["high_freq"] = high if high >= 0 else None
            continue
        where = f"{name}: row {len(labels) + 1} (line {line_number})"
        fields = line.split("\t", 2) if "\t" in line else line.split(None, 2)
        if len(fields) < 2:
            raise AnnotationError(f"{where}: expected 'start<TAB>end<TAB>label', got {line.strip()!r}")
        start = _parse_number(fields[0].strip(), "start", where)
        end = _parse_number(fields[1].strip(), "end", where)
        labels.append({"start": start, "end": end, "label": fields[2].strip() if len(fields) > 2 else "",
                       "low_freq": None, "high_freq": None, "row": len(labels) + 1, "line": line_number})
    return labels


# -- output files ----------------------------------------------------------------------------------

def output_name(recording, out_dir, fmt: str, root=None, keep_extension: bool = False) -> Path:
    """Where the detections file of one recording goes.

    Parameters
    ----------
    recording : str or os.PathLike
        The recording's path.
    out_dir : str or os.PathLike
        Folder that receives the detection files.
    fmt : {"raven", "audacity"}
    root : str or os.PathLike, optional
        Folder the recordings were collected from. When given, the
        recording's sub-folder below ``root`` is mirrored under ``out_dir``,
        so ``site1/rec.wav`` and ``site2/rec.wav`` (recorders name files by
        timestamp, so this is common) get different files.
    keep_extension : bool
        Name the file after ``rec.wav`` instead of ``rec``; needed only when
        one folder holds two recordings with the same stem (see
        :func:`output_names`).

    Returns
    -------
    pathlib.Path
        ``out_dir/[subfolder/]<stem>.selections.txt`` (raven) or
        ``out_dir/[subfolder/]<stem>.detections.txt`` (audacity).

    Notes
    -----
    The names deliberately differ from what :func:`core.annotations.find_annotation_tables`
    accepts as ground truth (``<stem>.Table.<n>.selections.txt``,
    ``<stem>.labels.txt``, ``<stem>.txt``): unreviewed model output written
    beside the recordings is never mistaken for annotations. A reviewer who
    corrects a table in Raven and saves it under Raven's default name
    (``<stem>.Table.1.selections.txt``) turns it into training labels.
    """
    if fmt not in _SUFFIXES:
        raise ValueError(f"unknown detections format {fmt!r} (expected one of {sorted(_SUFFIXES)})")
    recording = Path(recording)
    subfolder = Path()
    if root is not None:
        try:
            subfolder = recording.parent.relative_to(Path(root))
        except ValueError:
            raise ValueError(f"{recording} is not under {root}") from None
    base = recording.name if keep_extension else recording.stem
    return Path(out_dir) / subfolder / (base + _SUFFIXES[fmt])


def output_names(recordings: Iterable, out_dir, fmt: str, root=None) -> dict[Path, Path]:
    """Detection file for each of many recordings, all names distinct.

    As :func:`output_name`, except that recordings whose names would clash
    (same folder, same stem, different extension: ``rec.wav`` and
    ``rec.flac``) are named after their full file name (``rec.wav.selections.txt``).

    Returns
    -------
    dict of pathlib.Path to pathlib.Path
        Recording -> output path, in input order.
    """
    recordings = [Path(r) for r in recordings]
    plain = {r: output_name(r, out_dir, fmt, root) for r in recordings}
    counts: dict[Path, int] = {}
    for target in plain.values():
        counts[target] = counts.get(target, 0) + 1
    return {r: output_name(r, out_dir, fmt, root, keep_extension=True) if counts[plain[r]] > 1 else plain[r]
            for r in recordings}
