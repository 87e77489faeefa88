"""Benchmark of the core pipeline on the real dataset: features (cold and cached), training, prediction.

    python -m bench.bench_core [--source ../shared/data/animal-sound-dataset] [--work DIR] [--epochs 30]

Imports the dataset into a fresh data directory, times feature extraction with
an empty cache and again with the cache filled, trains the baseline through the
real harness (seed 42), and times ``Classifier.classify`` on a 5 s clip
once the model is loaded. Prints a markdown table and writes it as JSON to
bench/results/core.json.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: BLAS threads fight over shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import baseline  # noqa: E402
import common  # noqa: E402
from core.dataset import load_splits  # noqa: E402

TARGETS = {"cold_features_s": 60.0, "cached_features_s": 5.0, "predict_ms": 20.0}
RESULTS = ROOT / "bench" / "results" / "core.json"


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def five_second_clip(data_dir: Path, dest: Path) -> Path:
    """A real Test recording looped to 5 s, kept at its native rate and channels (decoding is part of the cost)."""
    import soundfile as sf
    source = sorted((data_dir / "Test").rglob("*.wav"))[0]
    y, sr = sf.read(str(source), always_2d=True)
    reps = int(np.ceil(5 * sr / len(y)))
    sf.write(str(dest), np.tile(y, (reps, 1))[:5 * sr], sr, subtype="PCM_16")
    return dest


def predict_latency_ms(model_dir: Path, clip: Path, calls: int) -> tuple[float, str]:
    """Median milliseconds of ``classify`` on ``clip`` with the model loaded and warmed up."""
    clf = common.Classifier(model_dir)
    for _ in range(3):       # the first calls trace the graph and fill caches
        clf.classify(clip)
    times = [timed(clf.classify, clip)[1] for _ in range(calls)]
    return 1000 * statistics.median(times), clf.backend


def markdown(row: dict) -> str:
    columns = [("accuracy", "accuracy", "{:.3f}"), ("macro-F1", "macro_f1", "{:.3f}"),
               ("cold features s", "cold_features_s", "{:.1f}"), ("cached features s", "cached_features_s", "{:.2f}"),
               ("train s", "train_s", "{:.1f}"), ("predict ms", "predict_ms", "{:.1f}")]
    head = "| " + " | ".join(name for name, _, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    body = "| " + " | ".join(fmt.format(row[key]) for _, key, fmt in columns) + " |"
    return "\n".join([head, rule, body])


def run(source: Path, work: Path, epochs: int, calls: int) -> dict:
    data_dir, cache = work / "Animals_Sounds", work / "cache"
    summary, import_s = timed(common.import_dataset, source, data_dir, seed=42, force=True)
    shutil.rmtree(cache, ignore_errors=True)          # cold means an empty cache
    cfg = common.FeatureConfig()
    splits, cold_s = timed(load_splits, data_dir, cfg, 42, cache_dir=cache)
    _, cached_s = timed(load_splits, data_dir, cfg, 42, cache_dir=cache)
    args = common.make_parser("baseline", "bench").parse_args([
        "--data-dir", str(data_dir), "--model-dir", str(work / "model" / "baseline"), "--epochs", str(epochs),
        "--seed", "42", "--charts-dir", str(work / "charts"), "--cache-dir", str(cache), "--quiet"])
    metrics = common.run_experiment("baseline", args, baseline.train)
    latency_ms, backend = predict_latency_ms(args.model_dir, five_second_clip(data_dir, work / "clip5s.wav"), calls)
    return {"clips": summary["clips"], "unreadable": summary["skipped"], "import_s": round(import_s, 2),
            "n_train": len(splits.train.y), "n_val": len(splits.val.y), "n_test": len(splits.test.y),
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "epochs_run": metrics["epochs_run"],
            "cold_features_s": round(cold_s, 2), "cached_features_s": round(cached_s, 3),
            "train_s": metrics["train_seconds"], "predict_ms": round(latency_ms, 2), "predict_backend": backend,
            "predict_calls": calls, "epochs": epochs, "seed": 42, "targets": TARGETS,
            "cpu_count": os.cpu_count(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "animal-sound-dataset",
                   help="dataset folder or zip in the published layout")
    p.add_argument("--work", type=Path, help="keep the data, cache and model here (default: a temporary folder)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--calls", type=int, default=50, help="timed predictions of the 5 s clip")
    args = p.parse_args(argv)
    if not args.source.exists():
        sys.exit(f"error: {args.source}: no such dataset (pass --source)")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        row = run(args.source, args.work, args.epochs, args.calls)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
            row = run(args.source, Path(tmp), args.epochs, args.calls)
    table = markdown(row)
    misses = [k for k, limit in TARGETS.items() if row[k] >= limit]
    print(f"\n{table}\n\n{row['clips']} clips ({row['unreadable']} unreadable), {row['n_train']}/{row['n_val']}/"
          f"{row['n_test']} train/val/test, {row['epochs_run']} epochs, predict on {row['predict_backend']}; "
          f"targets: " + ", ".join(f"{k} < {v:g}" for k, v in TARGETS.items())
          + (f"; MISSED: {', '.join(misses)}" if misses else "; all met"))
    common.atomic_write(RESULTS, json.dumps({**row, "table": table}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
