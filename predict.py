"""Classify a recording, or every recording under a folder, with a trained model.

    python predict.py --file clip.wav [--top-k 3] [--timeline] [--json]
    python predict.py --dir recordings/ --csv predictions.csv
    python predict.py --dir recordings/ --format raven [--out tables/] [--combined]
    python predict.py --dir recordings/ --format audacity --workers 2
    python predict.py --dir /shared/season/ --format csv --out runs/ --engine ray --ray-address auto
    python predict.py --file clip.wav --model-dir model/transfer --model-dir model/enhance   # an ensemble

A multi-label model (train_vgg.py --multi-label) names every class above
its threshold: printed and in CSV as "bird;dog", in JSON as a "labels" list
beside "label" (the most probable of them, or unknown when none).

Without --model-dir the best trained variant is used (highest macro-F1 in
model/results.csv, else model/enhance, else model/baseline); several
--model-dir are averaged (their calibrated probabilities; a window is
unknown when most of the members that can reject would reject it). Without
--backend the fastest runtime present is used: ONNX, then int8 TFLite (both
written by export.py, and neither imports TensorFlow), else Keras.

A --dir run that writes files keeps a journal beside them: killed and started
again with the same command, it classifies only what was not finished, and
writes the same files an uninterrupted run would.
"""
import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import common
from core import batch
from core.detections import (
    RAVEN_SUFFIX,
    audacity_labels,
    keep_detections,
    merge_windows,
    output_names,
    raven_combined,
    raven_table,
)
from core.detections import Window as Detection

FORMATS = ("csv", "json", "raven", "audacity")
PER_RECORDING = ("raven", "audacity")   # formats written as one file per recording (raven: unless --combined)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless it is unset (None) or off (False): the help text says what happens then."""

    def _get_help_string(self, action):
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="one recording")
    src.add_argument("--dir", type=Path, help="a folder, searched recursively")
    p.add_argument("--model-dir", type=Path, action="append",
                   help="trained model directory (default: best trained variant); give it again to average "
                        "several models' calibrated probabilities (an ensemble)")
    p.add_argument("--backend", choices=common.BACKENDS, default="auto",
                   help="model runtime; auto: onnx, else tflite, else keras, whichever the model directory has")
    p.add_argument("--top-k", type=int, default=3, help="classes listed for --file")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--timeline", action="store_true", help="also list each analysis window's label "
                                                           "(csv and json files: one row per window too)")
    p.add_argument("--window-seconds", type=float, help="analysis window (default: the model's 16 s span)")
    p.add_argument("--hop-seconds", type=float, help="window hop (default: half a window)")
    p.add_argument("--no-reject", action="store_true", help="always name the most probable class, never 'unknown'")
    p.add_argument("--reject-threshold", type=float,
                   help="OOD score above which a window is 'unknown' (default: the model's, set on validation)")
    out = p.add_argument_group("files written by a --dir run")
    table = out.add_mutually_exclusive_group()
    table.add_argument("--csv", type=Path, help="write file,label,confidence,<class...>,ood_score rows to this file")
    table.add_argument("--format", choices=FORMATS,
                       help="csv, json: one table for the run; raven: a Raven Pro selection table per recording "
                            "(<name>.selections.txt); audacity: a label track per recording (<name>.detections.txt)")
    out.add_argument("--out", type=Path, help="folder for --format files (default: the --dir folder); "
                                              "sub-folders of --dir are mirrored")
    out.add_argument("--combined", action="store_true",
                     help=f"raven: one table for the whole run (detections{RAVEN_SUFFIX}) instead of one per recording")
    out.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                     help="raven, audacity: merge consecutive windows with the same label into one detection")
    out.add_argument("--min-confidence", type=float,
                     help="raven, audacity: drop windows below this confidence (default: the model's per-class "
                          "thresholds, if its config.json has any)")
    run = p.add_argument_group("how a --dir run is carried out")
    run.add_argument("--workers", type=int, help="processes classifying in parallel (default: every core; "
                                                 "1 with the keras backend; with --engine ray: every CPU of the cluster)")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="skip the recordings the journal of an earlier run with the same model and settings holds")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: worker processes on this machine; ray: Ray Data actors, on a cluster if given one")
    run.add_argument("--ray-address", help="running Ray cluster (auto, HOST:6379 or ray://HOST:10001; "
                                           "default: $RAY_ADDRESS, else a local Ray started for the run)")
    args = p.parse_args(argv)
    if args.file and (args.csv or args.format or args.out):
        p.error("--csv, --format and --out apply to --dir")
    if args.out and not args.format:
        p.error("--out needs --format")
    if args.combined and args.format != "raven":
        p.error("--combined applies to --format raven")
    if args.min_confidence is not None and (args.format not in PER_RECORDING or not 0 <= args.min_confidence <= 1):
        p.error("--min-confidence takes a value in [0, 1] and applies to --format raven or audacity")
    if args.workers is not None and args.workers < 1:
        p.error("--workers must be at least 1")
    return args


# ---------------------------------------------------------------- labels: every decision is here

def window_label(clf, probs, ood_score) -> tuple[str, float]:
    """The label of one window, or of a whole recording, and its confidence.

    Every label this command prints or writes is decided here, by the model's
    rule (:meth:`core.inference.Classifier.decide`): the most probable animal,
    or "unknown" when the open-set score ``ood_score`` is above the threshold
    (unless --no-reject). ``probs`` are the class probabilities in
    ``clf.classes`` order.
    """
    return clf.decide(probs, ood_score)


def label_text(rec) -> str:
    """The label as printed and tabled: a multi-label record's classes joined by ';', else its one label."""
    return ";".join(rec["labels"]) or rec["label"] if "labels" in rec else rec["label"]


def labelled(clf, probs, ood_score) -> dict:
    """The "label" and "confidence" entries of a record, and "labels" for a multi-label model."""
    label, confidence = window_label(clf, probs, ood_score)
    entries = {"label": label, "confidence": round(confidence, 4)}
    if clf.multi_label:
        entries["labels"] = clf.labels(probs, ood_score)   # every class it gives, most probable first
    return entries


def rounded(score):
    return None if score is None else round(float(score), 4)


def window_record(clf, window) -> dict:
    return {"start": round(window.start, 2), "end": round(window.end, 2),
            **labelled(clf, window.probs, window.ood_score), "ood_score": rounded(window.ood_score)}


def result_record(clf, path, recording) -> dict:
    """What is printed or tabled for one recording: its label, OOD score, probabilities and labelled windows."""
    return {"file": str(path), **labelled(clf, recording.probs, recording.ood_score),
            "ood_score": rounded(recording.ood_score),
            "probabilities": {c: round(float(p), 4) for c, p in zip(clf.classes, recording.probs)},
            "windows": [window_record(clf, w) for w in recording.windows]}


def recording_detections(clf, recording, args) -> list[Detection]:
    """The detections of one recording: its labelled windows, thresholded, then merged (--merge)."""
    labelled = [Detection(w.start, w.end, *window_label(clf, w.probs, w.ood_score)) for w in recording.windows]
    kept = keep_detections(labelled, clf.config.get("thresholds", {}), args.min_confidence)
    return merge_windows(kept) if args.merge else kept


# ---------------------------------------------------------------- printing and tables

def print_record(rec, top_k, timeline):
    print(f"{rec['file']}: {label_text(rec)} ({rec['confidence']:.2f})")
    for cls, p in sorted(rec["probabilities"].items(), key=lambda kv: -kv[1])[:top_k]:
        print(f"  {cls:<12}{p:.3f}")
    if timeline:
        for w in rec["windows"]:
            print(f"  {w['start']:8.2f}-{w['end']:8.2f} s  {label_text(w):<12}{w['confidence']:.2f}")


def printable(rec, timeline) -> dict:
    return rec if timeline else {k: v for k, v in rec.items() if k != "windows"}


def csv_rows(rec, recording, timeline) -> list[list]:
    """The recording's row (file,label,confidence,<classes>,ood_score) and, with --timeline, one per window
    (+start,end)."""
    rows = [[rec["file"], label_text(rec), rec["confidence"], *rec["probabilities"].values(), rec["ood_score"]]]
    if timeline:
        rows[0] += ["", ""]
        rows += [[rec["file"], label_text(w), w["confidence"], *(round(float(p), 4) for p in window.probs),
                  w["ood_score"], w["start"], w["end"]] for w, window in zip(rec["windows"], recording.windows)]
    return rows


def csv_text(header, rows) -> str:
    table = io.StringIO()   # the csv module quotes file names holding commas or quotes
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return table.getvalue()


class Outputs:
    """The files of a --dir run: a table for the run or one file per recording, the errors list, the journal."""

    def __init__(self, args):
        if args.csv:
            self.folder, stem, self.table = args.csv.parent, args.csv.stem, args.csv
        else:
            self.folder = args.out or args.dir
            stem = "predictions" if args.format in ("csv", "json") else "detections"
            names = {"csv": f"{stem}.csv", "json": f"{stem}.json", "raven": f"{stem}{RAVEN_SUFFIX}"}
            per_recording = args.format == "audacity" or (args.format == "raven" and not args.combined)
            self.table = None if per_recording else self.folder / names[args.format]
        self.format = "csv" if args.csv else args.format
        self.errors = self.folder / f"{stem}.errors.csv"
        self.journal = self.folder / f".{stem}.journal.jsonl"


def write_outputs(args, clf, rels, journal, outputs) -> tuple[int, int]:
    """Print every recording's result and rebuild the output files from the journal, in file order.

    Returns (classified, skipped). Per-recording files are written as their
    records are read, the run's tables at the end; every file goes through a
    temporary name, so a crash here leaves the previous version whole.
    """
    fmt = outputs.format if outputs else None
    per_file = output_names([args.dir / r for r in rels], outputs.folder, fmt, args.dir) \
        if fmt in PER_RECORDING and outputs.table is None else {}
    keep_records = args.json or fmt == "json"   # else memory would grow with the archive
    classified, rows, records, combined, errors = 0, [], [], {}, []
    for rel in rels:
        raw, path = journal.read(rel), args.dir / rel
        if "error" in raw:
            errors.append([str(path), raw["error"]])
            continue
        classified += 1
        recording = batch.recording_of(raw)
        rec = result_record(clf, path, recording)
        if keep_records:
            records.append(printable(rec, args.timeline))
        if not args.json:
            print(f"{rec['file']},{label_text(rec)},{rec['confidence']:.3f}")
            if args.timeline:
                print_record(rec, 0, True)
        if fmt == "csv":
            rows += csv_rows(rec, recording, args.timeline)
        elif fmt in PER_RECORDING:
            found = recording_detections(clf, recording, args)
            if fmt == "audacity":
                common.atomic_write(per_file[path], audacity_labels(found))
            elif outputs.table is None:
                common.atomic_write(per_file[path], raven_table(found, path.name, high_freq=clf.cfg.sr / 2))
            else:
                combined[rel] = found
    if args.json:
        print(json.dumps(records))
    if outputs:
        write_run_files(outputs, clf, args.timeline, rows, records, combined, errors)
    return classified, len(errors)


def write_run_files(outputs, clf, timeline, rows, records, combined, errors) -> None:
    """The run's table (csv rows, json records or the combined Raven table), and its errors list."""
    if outputs.format == "csv":
        header = ["file", "label", "confidence", *clf.classes, "ood_score", *(["start", "end"] if timeline else [])]
        common.atomic_write(outputs.table, csv_text(header, rows))
    elif outputs.format == "json":
        common.atomic_write(outputs.table, json.dumps(records))
    elif outputs.table is not None:
        common.atomic_write(outputs.table, raven_combined(combined, high_freq=clf.cfg.sr / 2))
    if errors:
        common.atomic_write(outputs.errors, csv_text(["file", "problem"], errors))
    else:
        outputs.errors.unlink(missing_ok=True)   # left by an earlier run over files that have since been fixed


# ---------------------------------------------------------------- commands

def classify_one(args, clf):
    try:
        recording = clf.classify(args.file, args.window_seconds, args.hop_seconds)
    except common.AudioError as e:
        sys.exit(f"error: {e}")
    rec = result_record(clf, args.file, recording)
    if args.json:
        print(json.dumps(printable(rec, args.timeline)))
    else:
        print_record(rec, args.top_k, args.timeline)


def engine_records(args, clf, todo, settings):
    """The records of ``todo``, from worker processes here or from Ray actors."""
    if args.engine == "local":
        workers = args.workers or batch.default_workers(clf)
        return batch.classify_local(clf, args.dir, todo, settings, workers)
    try:
        from core.ray_engine import classify_with_ray
    except ImportError:
        sys.exit("error: --engine ray needs Ray: pip install 'ray[data]==2.60.0'")
    return classify_with_ray(args.dir, todo, settings, args.workers, args.ray_address)


def classify_dir(args, clf):
    if not args.dir.is_dir():
        sys.exit(f"error: {args.dir}: no such folder")
    outputs = Outputs(args) if args.csv or args.format else None
    rels = batch.list_recordings(args.dir)
    settings = batch.Settings.of(clf, args.window_seconds, args.hop_seconds, not args.no_reject,
                                 args.reject_threshold)
    with tempfile.TemporaryDirectory(prefix="predict-") as scratch:   # the journal of a run that writes no file
        journal = batch.Journal(outputs.journal if outputs else Path(scratch) / "journal.jsonl", settings.key(),
                                args.resume)
        try:
            todo = [r for r in rels if r not in journal]
            if journal.restarted and args.resume:
                common.warn(f"{journal.path}: made with another model or other settings; classifying everything again")
            if len(todo) < len(rels):
                print(f"resuming: {len(rels) - len(todo)} of {len(rels)} recordings already classified "
                      f"({journal.path})", file=sys.stderr)
            try:
                batch.commit(engine_records(args, clf, todo, settings), journal, args.dir, len(todo))
            except (KeyboardInterrupt, batch.RunInterrupted) as e:
                kept = f"; {len(journal)} finished recordings are kept: run the same command to resume" if outputs else ""
                sys.exit(f"error: {str(e) or 'interrupted'}{kept}")
            classified, skipped = write_outputs(args, clf, rels, journal, outputs)
        finally:
            journal.close()
    wrote = (outputs.table or outputs.folder) if outputs else None
    print(f"{classified} classified, {skipped} skipped" + (f"; wrote {wrote}" if wrote else "")
          + (f"; unreadable files listed in {outputs.errors}" if skipped and outputs else ""), file=sys.stderr)
    if not classified:
        sys.exit(1)


def main(argv=None):
    args = parse_args(argv)
    try:
        clf = common.load_classifier(args.model_dir or [common.default_model_dir()], args.backend,
                                     reject=not args.no_reject, threshold=args.reject_threshold)
    except common.ModelDirError as e:
        sys.exit(f"error: {e}")
    if args.file:
        classify_one(args, clf)
    else:
        classify_dir(args, clf)


if __name__ == "__main__":
    main()
