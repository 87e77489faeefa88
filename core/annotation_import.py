"""Annotated long recordings -> a training data directory (``download_data.py --annotations``).

Every recording under a folder that has a Raven selection table or an Audacity
label file beside it (see :func:`core.annotations.find_annotation_tables`)
gives one clip per box, padded on both sides, written to ``Training/<label>/``
or ``Test/<label>/``; with ``background=True`` the unannotated stretches
between boxes are saved as negatives in ``Noise/background/``. Clips are mono
16-bit WAV at the rate every model reads (16 kHz), named after their recording
and span (:func:`core.annotations.clip_file_name`), and ``manifest.csv``
records the recording each came from.

A recording goes to one side of the split with all its clips, and copies of
one recording (the same audio under two names) count as one recording.

A table that does not fit its recording (a missing column, a box beyond the
end of the file) is named with its row in a one-line warning, and that
recording is skipped and counted; the rest are imported. The new tree is built
beside the data directory and swapped in when complete, so a failed import
leaves the previous data intact.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from .annotations import (
    AnnotationError,
    background_spans,
    clip_file_name,
    clip_spans,
    find_annotation_tables,
    read_annotations,
    safe_name,
)
from .audio import AudioError, check_clip, stream_audio, warn
from .dataset import (
    DatasetError,
    audio_hash,
    check_target,
    pcm16,
    publish,
    recording_split,
    split_counts,
)
from .features import FeatureConfig

SR = FeatureConfig().sr
BACKGROUND_DIR = "Noise/background"


def scan_recording(path) -> tuple[float, str]:
    """(duration in seconds, content hash) of a recording, decoded once in blocks at ``SR``."""
    digest, samples = hashlib.sha1(), 0
    for block in stream_audio(path, SR):
        digest.update(pcm16(block))
        samples += len(block)
    if samples == 0:
        raise AudioError(path, "contains no audio samples")
    return samples / SR, digest.hexdigest()


def cut_spans(path, spans: Sequence[tuple[float, float, str]]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, audio)`` for each ``(start_s, end_s, label)`` of ``spans``, in order of start.

    The recording is decoded once; only the audio from the start of the
    earliest span not yet cut is kept, so memory is bounded by the longest
    span plus a block, not by the recording.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    bounds = [(round(spans[i][0] * SR), round(spans[i][1] * SR)) for i in order]
    kept, kept_from, n = np.zeros(0, np.float32), 0, 0     # kept[0] is sample kept_from of the recording
    for block in chain(stream_audio(path, SR), [None]):   # None: the end, where spans past it are cut short
        if block is not None:
            kept = np.concatenate([kept, block])
        while n < len(bounds) and (block is None or bounds[n][1] <= kept_from + len(kept)):
            start, end = bounds[n]
            yield order[n], kept[start - kept_from:end - kept_from]
            n += 1
        if n < len(bounds):
            drop = min(max(0, bounds[n][0] - kept_from), len(kept))   # later spans start no earlier
            kept, kept_from = kept[drop:], kept_from + drop



def plan_recording(recording: Path, table: Path, padding: float, background: bool) -> dict:
    """What to cut from one recording: its clip spans, background spans and content hash.

    Raises AnnotationError (the table does not fit) or AudioError (unreadable).
    """
    boxes = read_annotations(table)
    seconds, digest = scan_recording(recording)
    return {"recording": recording, "hash": digest, "clips": clip_spans(boxes, seconds, padding),
            "background": background_spans(boxes, seconds, padding=padding) if background else []}


def import_annotations(folder, data_dir, padding: float = 0.5, background: bool = False, test_size: float = 0.2,
                       seed: int = 42, force: bool = False) -> dict:
    """Cut the annotated recordings under ``folder`` into a data directory (see the module docstring).

    Returns a summary: ``classes`` ({class: {"Training": n, "Test": n}}),
    ``recordings`` imported, ``clips``, ``background`` clips, and the
    recordings skipped for a ``rejected`` table or as ``unreadable``, plus
    ``skipped_clips`` (silent or too short to use).

    Raises
    ------
    DatasetError
        No such folder; ``data_dir`` holds data and ``force`` is off; a
        recording with two candidate tables; nothing importable.
    """
    folder, data_dir = Path(folder), Path(data_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    check_target(data_dir, force)
    try:
        pairs, _ = find_annotation_tables(folder)
    except AnnotationError as e:
        raise DatasetError(str(e)) from None
    plans, rejected, unreadable = [], 0, 0
    for recording, table in tqdm(pairs, desc="reading tables", unit="recording", disable=None):
        try:
            plans.append(plan_recording(recording, table, padding, background))
        except AnnotationError as e:
            warn(f"{e} ({recording} skipped)")
            rejected += 1
        except AudioError as e:
            warn(f"skipping {e}")
            unreadable += 1
    spans = [(plan, span) for plan in plans for span in plan["clips"]]
    if not spans:
        raise DatasetError(f"{folder}: no annotated box to import (a recording needs a selection table or "
                           f"label file beside it, named <recording>.Table.1.selections.txt, .labels.txt or .txt)")
    held_out = recording_split([label for _, (_, _, label) in spans], [plan["hash"] for plan, _ in spans],
                               test_size, seed)
    for plan in plans:
        plan["targets"] = [(span, "Noise") for span in plan["background"]]
    for (plan, span), is_test in zip(spans, held_out):
        plan["targets"].append((span, "Test" if is_test else "Training"))
    rows, skipped = [], 0
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".import-") as tmp:
        new = Path(tmp)
        for plan in tqdm(plans, desc="cutting clips", unit="recording", disable=None):
            for i, audio in cut_spans(plan["recording"], [span for span, _ in plan["targets"]]):
                (start, end, label), split = plan["targets"][i]
                name, label = clip_file_name(plan["recording"], start, end, label, root=folder), safe_name(label)
                dest = new / (BACKGROUND_DIR if split == "Noise" else f"{split}/{label}") / name
                if dest.exists():   # the same box twice in one table
                    continue
                try:
                    check_clip(audio, SR, name)
                except AudioError as e:
                    warn(f"skipping clip {e}")
                    skipped += 1
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(dest), audio, SR, subtype="PCM_16", format="WAV")
                rows.append({"file": dest.relative_to(new).as_posix(), "class": label, "split": split,
                             "hash": audio_hash(audio), "source": plan["recording"].relative_to(folder).as_posix()})
        publish(new, data_dir, rows, ["Training", "Test", *([BACKGROUND_DIR] if background else [])])
    return {"classes": split_counts(rows), "recordings": len(plans),
            "clips": sum(r["split"] != "Noise" for r in rows), "background": sum(r["split"] == "Noise" for r in rows),
            "rejected": rejected, "unreadable": unreadable, "skipped_clips": skipped}
