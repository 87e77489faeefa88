"""Annotation tables of long recordings -> labelled training clips.

Ecologists box calls in Raven Pro (selection tables) or Audacity (label
tracks) and keep the table beside the recording. This module reads those
tables, pairs them with their recordings, and computes the spans to cut:
one padded clip per box, plus unlabelled background stretches between boxes.
It decodes no audio: callers pass each recording's duration and cut the
clips themselves.

Error policy: anything wrong in a table raises :class:`AnnotationError` with
a one-line message naming the table file and the 1-based data row, so a
reviewer can open the file and fix that row.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .detections import (
    BEGIN_TIME,
    END_TIME,
    HIGH_FREQ,
    LOW_FREQ,
    AnnotationError,
    read_audacity_labels,
    read_raven_table,
)

__all__ = [
    "LABEL_COLUMNS",
    "Annotation",
    "AnnotationError",
    "background_spans",
    "clip_file_name",
    "clip_spans",
    "find_annotation_tables",
    "read_annotations",
    "recording_group",
    "safe_name",
]

# Raven label columns accepted, in order of preference, matched case-insensitively.
# Raven's own default annotation column is "Annotation"; the others are what
# annotators commonly name the column they add.
LABEL_COLUMNS = ("Annotation", "Label", "Species", "Class")


# Table names accepted beside a recording, after its stem (or full file name).
# Model output (core.detections.output_name) uses other names on purpose.
_TABLE_SUFFIX = r"(?i:\.Table\.\d+\.selections\.txt|\.labels\.txt|\.txt)"

TIME_TOLERANCE = 0.001   # s; tables round times, so a box drawn to the file's end may overshoot it


@dataclass(frozen=True)
class Annotation:
    """One annotated box: a time span with a label and, optionally, a frequency band.

    Parameters
    ----------
    start, end : float
        Seconds from the start of the recording.
    label : str
    low_freq, high_freq : float or None
        Band in Hz when the table has one.
    source : str or None
        Table file it came from (for error messages; not compared).
    row : int or None
        1-based data row in that table (for error messages; not compared).
    """
    start: float
    end: float
    label: str
    low_freq: float | None = None
    high_freq: float | None = None
    source: str | None = field(default=None, compare=False)
    row: int | None = field(default=None, compare=False)


# -- reading tables --------------------------------------------------------------------------------

def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if line.strip():
                return line
    return ""


def _looks_like_raven(first_line: str) -> bool:
    return any(cell.strip().lower() == BEGIN_TIME.lower() for cell in first_line.split("\t"))


def _raven_annotations(path: Path) -> list[Annotation]:
    rows = read_raven_table(path)
    if not rows:
        return []
    by_lower = {column.lower(): column for column in rows[0]}
    label_column = next((by_lower[c.lower()] for c in LABEL_COLUMNS if c.lower() in by_lower), None)
    if label_column is None:
        raise AnnotationError(f"{path}: header: no label column (expected one of {', '.join(LABEL_COLUMNS)})")
    # Raven writes one row per selection and view; keep one row per selection,
    # the spectrogram's if there is one (it is the view boxes are drawn in).
    chosen: dict[object, int] = {}
    for i, r in enumerate(rows):
        key = r.get("Selection") if r.get("Selection") is not None else ("row", i)
        if key not in chosen or (str(r.get("View", "")).lower().startswith("spectrogram")
                                 and not str(rows[chosen[key]].get("View", "")).lower().startswith("spectrogram")):
            chosen[key] = i
    annotations = []
    for i in sorted(chosen.values()):
        r = rows[i]
        label = r[label_column]
        if not label:
            raise AnnotationError(f"{path}: row {i + 1}: empty label in {label_column!r}")
        annotations.append(Annotation(r[BEGIN_TIME], r[END_TIME], label, r.get(LOW_FREQ), r.get(HIGH_FREQ),
                                      source=str(path), row=i + 1))
    return annotations


def _audacity_annotations(path: Path) -> list[Annotation]:
    annotations = []
    for r in read_audacity_labels(path):
        if not r["label"]:
            raise AnnotationError(f"{path}: row {r['row']} (line {r['line']}): empty label")
        annotations.append(Annotation(r["start"], r["end"], r["label"], r["low_freq"], r["high_freq"],
                                      source=str(path), row=r["row"]))
    return annotations


def read_annotations(path) -> list[Annotation]:
    """Read a Raven selection table or an Audacity label file.

    The format is told from the content, not the name (both are ``.txt``): a
    first line with a ``Begin Time (s)`` column is a Raven header; a first
    line starting with a number is an Audacity label.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    list of Annotation
        In file order, with ``source`` and ``row`` set for error messages.
        For Raven, the label comes from the first of the columns
        ``Annotation``, ``Label``, ``Species``, ``Class`` (case-insensitive)
        that the header has, and a selection listed once per view
        (waveform and spectrogram) is returned once.

    Raises
    ------
    AnnotationError
        Neither format; no label column; an empty label; anything
        :func:`core.detections.read_raven_table` or
        :func:`core.detections.read_audacity_labels` rejects.
    """
    path = Path(path)
    first = _first_line(path)
    if not first:
        return []
    if _looks_like_raven(first):
        return _raven_annotations(path)
    try:
        float(first.split()[0])
    except ValueError:
        raise AnnotationError(f"{path}: line 1: neither a Raven selection table (no {BEGIN_TIME!r} column) "
                              f"nor an Audacity label file (no start time)") from None
    return _audacity_annotations(path)


def find_annotation_tables(folder, extensions: Iterable[str] = AUDIO_EXTENSIONS
                           ) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair each recording under ``folder`` (recursively) with the table beside it.

    A table belongs to ``<dir>/<stem>.<ext>`` when it sits in the same folder
    and is named ``<stem>`` or ``<stem>.<ext>`` followed by
    ``.Table.<n>.selections.txt`` (Raven's default name), ``.labels.txt`` or
    ``.txt`` (suffix case-insensitive). Hidden files (``.*``, including the
    ``._*`` files macOS leaves on memory cards) are skipped.

    Parameters
    ----------
    folder : str or os.PathLike
    extensions : iterable of str
        Audio file extensions, lower case with the dot.

    Returns
    -------
    pairs : list of (Path, Path)
        (recording, table), sorted by recording path.
    unannotated : list of Path
        Recordings with no table, sorted.

    Raises
    ------
    AnnotationError
        A recording with more than one candidate table (e.g. ``Table.1`` and
        ``Table.2``): which one is the ground truth is for a person to decide.
    """
    folder = Path(folder)
    extensions = {e.lower() for e in extensions}
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    texts_by_dir: dict[Path, list[Path]] = {}
    for p in files:
        if p.name.lower().endswith(".txt"):
            texts_by_dir.setdefault(p.parent, []).append(p)
    pairs, unannotated = [], []
    for recording in files:
        if recording.suffix.lower() not in extensions:
            continue
        # The stem must match exactly; only the suffix is case-insensitive.
        pattern = re.compile(rf"(?:{re.escape(recording.stem)}|{re.escape(recording.name)}){_TABLE_SUFFIX}")
        candidates = [t for t in texts_by_dir.get(recording.parent, []) if pattern.fullmatch(t.name)]
        if len(candidates) > 1:
            raise AnnotationError(f"{recording}: several annotation tables "
                                  f"({', '.join(t.name for t in candidates)}); keep one")
        if candidates:
            pairs.append((recording, candidates[0]))
        else:
            unannotated.append(recording)
    return pairs, unannotated


# -- spans to cut ----------------------------------------------------------------------------------

def _where(a: Annotation, index: int) -> str:
    if a.source is not None and a.row is not None:
        return f"{a.source}: row {a.row}"
    return f"annotation {index + 1}"


def _check_annotation(a: Annotation, index: int, duration: float, tolerance: float) -> None:
    where = _where(a, index)
    if a.start < 0:
        raise AnnotationError(f"{where}: negative start {a.start:g} s")
    if a.end <= a.start:
        raise AnnotationError(f"{where}: end {a.end:g} s is not after start {a.start:g} s")
    if a.end > duration + tolerance:
        raise AnnotationError(f"{where}: end {a.end:g} s is beyond the recording's {duration:g} s")


def _check_arguments(duration: float, padding: float) -> None:
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration!r}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")


def clip_spans(annotations: Sequence[Annotation], duration: float, padding: float = 0.5,
               tolerance: float = TIME_TOLERANCE) -> list[tuple[float, float, str]]:
    """Span of the training clip to cut for each annotation.

    Parameters
    ----------
    annotations : sequence of Annotation
    duration : float
        Length of the recording in seconds.
    padding : float
        Seconds added before and after each box, so that the clip holds the
        call's onset and decay that a tight box leaves out.
    tolerance : float
        How far (s) a box may end past ``duration`` and still count as ending
        at it; tables round times.

    Returns
    -------
    list of (start, end, label)
        One per annotation, in input order: ``(max(0, start - padding),
        min(duration, end + padding), label)``. Overlapping boxes give
        overlapping clips; nothing is merged.

    Raises
    ------
    AnnotationError
        A box with a negative start, ``end <= start``, or ``end`` beyond
        ``duration + tolerance``; the message names the table and data row.
    """
    _check_arguments(duration, padding)
    spans = []
    for i, a in enumerate(annotations):
        _check_annotation(a, i, duration, tolerance)
        spans.append((max(0.0, a.start - padding), min(duration, a.end + padding), a.label))
    return spans


def background_spans(annotations: Sequence[Annotation], duration: float, min_seconds: float = 2.0,
                     max_seconds: float = 10.0, padding: float = 0.5, label: str = "background",
                     tolerance: float = TIME_TOLERANCE) -> list[tuple[float, float, str]]:
    """Unannotated stretches of a recording, cut into clips for a background class.

    Parameters
    ----------
    annotations : sequence of Annotation
        All boxes of the recording, any label, any order.
    duration : float
        Length of the recording in seconds.
    min_seconds, max_seconds : float
        Length bounds of each background clip, ``0 < min_seconds <= max_seconds``.
    padding : float
        Seconds kept clear on both sides of every box, so that background
        clips hold no part of a call the annotator boxed tightly.
    label : str
        Label given to every span.
    tolerance : float
        As in :func:`clip_spans`.

    Returns
    -------
    list of (start, end, label)
        In time order. Each gap between padded boxes (and the file's edges)
        is cut from its start into consecutive pieces of ``max_seconds``; the
        remainder is kept when at least ``min_seconds`` long, else dropped.

    Raises
    ------
    AnnotationError
        As :func:`clip_spans`, for an invalid box.
    """
    _check_arguments(duration, padding)
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds!r}, {max_seconds!r}")
    for i, a in enumerate(annotations):
        _check_annotation(a, i, duration, tolerance)
    busy = sorted((max(0.0, a.start - padding), min(duration, a.end + padding)) for a in annotations)
    spans, cursor = [], 0.0
    for busy_start, busy_end in [*busy, (duration, duration)]:
        gap_start, gap_end = cursor, busy_start
        piece_start = gap_start
        while gap_end - piece_start >= min_seconds:
            piece_end = min(piece_start + max_seconds, gap_end)
            spans.append((piece_start, piece_end, label))
            piece_start = piece_end
        cursor = max(cursor, busy_end)
    return spans


# -- clip names ------------------------------------------------------------------------------------

# "<recording id>__<start ms>-<end ms>__<label>.wav"; ms zero-padded to 9 digits
# (277 h), so names sort chronologically within a recording.
_CLIP_NAME = re.compile(r"(?P<group>.+)__(?P<start>\d{9,})-(?P<end>\d{9,})__(?P<label>(?:(?!__)[^/\\])*)\.wav")


def safe_name(text: str) -> str:
    """``text`` usable as a file or folder name on any system: forbidden characters become ``_``."""
    # Characters Windows forbids in names, path separators and control characters.
    return re.sub(r'[<>:"/\\|?*\x00-\x1f]', "_", text).strip(" .") or "_"


def _recording_id(recording: Path, root) -> str:
    if root is None:
        return safe_name(recording.stem)
    try:
        relative = recording.relative_to(Path(root)).with_suffix("")
    except ValueError:
        raise ValueError(f"{recording} is not under {root}") from None
    # "~" joins sub-folders: recorders name files by timestamp, so site1/x and site2/x are common.
    return "~".join(safe_name(part) for part in relative.parts)


def clip_file_name(recording, start: float, end: float, label: str, root=None) -> str:
    """A deterministic, filesystem-safe name for the clip cut from a recording.

    Parameters
    ----------
    recording : str or os.PathLike
        The long recording the clip comes from.
    start, end : float
        The clip's span in seconds (rounded to whole milliseconds in the name).
    label : str
        The clip's label (kept in the name so that two boxes with the same
        span but different labels get different files).
    root : str or os.PathLike, optional
        Folder the recordings were collected from. When given, the recording
        is identified by its path below ``root`` with ``~`` between folders
        (``site1~rec1``), so same-named recordings from different sites do not
        collide; otherwise by its stem.

    Returns
    -------
    str
        ``<recording id>__<start_ms>-<end_ms>__<label>.wav`` with times as
        9-digit zero-padded milliseconds, e.g.
        ``rec1__000012500-000015000__bird.wav``. Characters that are unsafe
        in file names become ``_``; runs of ``_`` in the label are collapsed
        so that the ``__`` separators stay unambiguous.

    Raises
    ------
    ValueError
        ``start < 0`` or ``end < start``; ``recording`` not under ``root``.
    """
    if not 0 <= start <= end:
        raise ValueError(f"clip span needs 0 <= start <= end, got {start!r}..{end!r}")
    group = _recording_id(Path(recording), root)
    safe_label = re.sub(r"_{2,}", "_", safe_name(label))
    return f"{group}__{round(start * 1000):09d}-{round(end * 1000):09d}__{safe_label}.wav"


def recording_group(clip_name) -> str:
    """The recording id a clip name was made from (see :func:`clip_file_name`).

    Use it as the group of a split (e.g. ``core.dataset.group_split``) so that
    clips of one recording, which share its site, day and background, never
    land on both sides.

    Parameters
    ----------
    clip_name : str or os.PathLike
        A clip's file name or path.

    Raises
    ------
    ValueError
        The name was not made by :func:`clip_file_name`.
    """
    name = Path(clip_name).name
    match = _CLIP_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a clip name of the form <recording>__<start_ms>-<end_ms>__<label>.wav")
    return match["group"]
