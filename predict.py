"""Classify a recording, or every recording under a folder, with a trained model.

    python predict.py --file clip.wav [--top-k 3] [--timeline] [--json]
    python predict.py --dir recordings/ --csv predictions.csv
    python predict.py --file clip.wav --backend onnx

Without --model-dir the best trained variant is used (highest macro-F1 in
model/results.csv, else model/enhance, else model/baseline). Without
--backend the fastest runtime present is used: ONNX, then int8 TFLite (both
written by export.py, and neither imports TensorFlow), else Keras.
"""
import argparse
import csv
import io
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="one recording")
    src.add_argument("--dir", type=Path, help="a folder, searched recursively")
    p.add_argument("--model-dir", type=Path, help="trained model directory (default: best trained variant)")
    p.add_argument("--backend", choices=common.BACKENDS, default="auto",
                   help="model runtime; auto: onnx, else tflite, else keras, whichever the model directory has")
    p.add_argument("--top-k", type=int, default=3, help="classes listed for --file")
    p.add_argument("--csv", type=Path, help="with --dir: write file,label,confidence,<class...>,ood_score rows here")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--timeline", action="store_true", help="also list each analysis window's label")
    p.add_argument("--window-seconds", type=float, help="analysis window (default: the model's 16 s span)")
    p.add_argument("--hop-seconds", type=float, help="window hop (default: half a window)")
    p.add_argument("--no-reject", action="store_true", help="always name the most probable class, never 'unknown'")
    p.add_argument("--reject-threshold", type=float,
                   help="OOD score above which a window is 'unknown' (default: the model's, set on validation)")
    return p.parse_args(argv)


def rounded(score):
    return None if score is None else round(float(score), 4)


def result_record(path, recording, clf):
    label, confidence = clf.decide(recording.probs, recording.ood_score)
    windows = [(w, *clf.decide(w.probs, w.ood_score)) for w in recording.windows]
    return {"file": str(path), "label": label, "confidence": round(confidence, 4),
            "ood_score": rounded(recording.ood_score),
            "probabilities": {c: round(float(p), 4) for c, p in zip(clf.classes, recording.probs)},
            "windows": [{"start": round(w.start, 2), "end": round(w.end, 2), "label": lab,
                         "confidence": round(conf, 4), "ood_score": rounded(w.ood_score)} for w, lab, conf in windows]}


def print_record(rec, top_k, timeline):
    print(f"{rec['file']}: {rec['label']} ({rec['confidence']:.2f})")
    for cls, p in sorted(rec["probabilities"].items(), key=lambda kv: -kv[1])[:top_k]:
        print(f"  {cls:<12}{p:.3f}")
    if timeline:
        for w in rec["windows"]:
            print(f"  {w['start']:8.2f}-{w['end']:8.2f} s  {w['label']:<12}{w['confidence']:.2f}")


def main(argv=None):
    args = parse_args(argv)
    try:
        clf = common.Classifier(args.model_dir or common.default_model_dir(), args.backend,
                                reject=not args.no_reject, threshold=args.reject_threshold)
    except common.ModelDirError as e:
        sys.exit(f"error: {e}")
    window = dict(window_seconds=args.window_seconds, hop_seconds=args.hop_seconds)
    if args.file:
        try:
            recording = clf.classify(args.file, **window)
        except common.AudioError as e:
            sys.exit(f"error: {e}")
        rec = result_record(args.file, recording, clf)
        if args.json:
            print(json.dumps(rec if args.timeline else {k: v for k, v in rec.items() if k != "windows"}))
        else:
            print_record(rec, args.top_k, args.timeline)
        return
    if not args.dir.is_dir():
        sys.exit(f"error: {args.dir}: no such folder")
    files = sorted(p for p in args.dir.rglob("*") if p.is_file() and common.is_audio_file(p))
    records, skipped = [], 0
    for path in tqdm(files, desc="classifying", unit="file", disable=None):
        try:
            records.append(result_record(path, clf.classify(path, **window), clf))
        except common.AudioError as e:
            common.warn(f"skipping {e}")
            skipped += 1
    if args.csv:
        table = io.StringIO()   # the csv module quotes file names holding commas or quotes
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["file", "label", "confidence", *clf.classes, "ood_score"])
        writer.writerows([r["file"], r["label"], r["confidence"], *(r["probabilities"][c] for c in clf.classes),
                          r["ood_score"]] for r in records)
        common.atomic_write(args.csv, table.getvalue())
    if args.json:
        print(json.dumps([r if args.timeline else {k: v for k, v in r.items() if k != "windows"}
                          for r in records]))
    else:
        for r in records:
            print(f"{r['file']},{r['label']},{r['confidence']:.3f}")
            if args.timeline:
                print_record(r, 0, True)
    print(f"{len(records)} classified, {skipped} skipped" + (f"; wrote {args.csv}" if args.csv else ""),
          file=sys.stderr)
    if not records:
        sys.exit(1)


if __name__ == "__main__":
    main()
