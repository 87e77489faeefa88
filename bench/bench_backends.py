"""Benchmark the inference backends of one model directory: cold start, per-clip latency, file size.

    python -m bench.bench_backends [--model-dir model/baseline] [--file clip.wav] [--runs 3] [--latency-runs 50]

- cold start: wall time of a fresh ``python predict.py --file CLIP --backend B``
  (interpreter, imports, model load, decoding, features, one answer), median of --runs;
- model latency: the backend alone on one clip's features once loaded, median
  of --latency-runs after a warm-up call;
- file latency: ``Classifier.classify`` on the clip (decode + features + model +
  calibration + the model's open-set score), same median, and the same without
  open-set scoring (a plain softmax), with their ratio;
- size of the backend's model file.

Backends whose file is missing are skipped (run export.py first). Without
--file a 5 s, 44.1 kHz synthetic clip is used: the cost does not depend on the
content. Prints a markdown table and writes bench/results/backends.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: BLAS threads fight on a shared 2-core box

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import common  # noqa: E402
from core.backends import FILES  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "model" / "baseline")
    p.add_argument("--file", type=Path, help="clip to classify (default: a synthetic 5 s clip)")
    p.add_argument("--runs", type=int, default=3, help="cold starts per backend")
    p.add_argument("--latency-runs", type=int, default=50, help="timed calls per latency figure")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    return p.parse_args(argv)


def synthetic_clip(path: Path, seconds: float = 5.0, sr: int = 44100) -> Path:
    """A stereo 44.1 kHz clip like the dataset's: a warbling tone over noise."""
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * (2500 + 500 * np.sin(2 * np.pi * 3 * t)) * t)
    y = y + 0.02 * np.random.default_rng(0).standard_normal(len(t))
    sf.write(str(path), np.stack([y, y], axis=1).astype(np.float32), sr, subtype="PCM_16")
    return path


def cold_start(model_dir: Path, clip: Path, backend: str, runs: int) -> float:
    """Median wall time (s) of a fresh predict.py process answering for ``clip``."""
    cmd = [sys.executable, str(ROOT / "predict.py"), "--file", str(clip), "--model-dir", str(model_dir),
           "--backend", backend]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_ms(fn, runs: int) -> float:
    fn()   # warm-up: first calls allocate and (Keras) trace
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def latencies(model_dir: Path, clip: Path, backend: str, runs: int) -> dict:
    """Milliseconds per clip once loaded: the model alone, and the file to its answer with and without open-set
    scoring (calibrated probabilities and the model's OOD score, against a plain softmax)."""
    clf = common.Classifier(model_dir, backend)
    plain = common.Classifier(model_dir, backend, reject=False)
    plain.open_set = None   # as a model without open-set statistics: softmax only, no score
    _, _, audio = next(common.iter_windows(clip, clf.cfg))
    x = common.clip_features(audio, clf.cfg)[None]
    return {"model_ms": median_ms(lambda: clf.predictor.predict(x), runs),
            "file_ms": median_ms(lambda: clf.classify(clip), runs),
            "file_plain_ms": median_ms(lambda: plain.classify(clip), runs), "ood_score": clf.open_set.score}


def markdown(rows: list[dict]) -> str:
    lines = ["| backend | model file | size (MB) | cold start, `predict.py --file` (s) | model (ms/clip) "
             "| file to answer (ms/clip) | same without open-set scoring | ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | `{r['file']}` | {r['size_mb']:.2f} | {r['cold_start_s']:.2f} | {r['model_ms']:.2f} "
              f"| {r['file_ms']:.1f} | {r['file_plain_ms']:.1f} | {r['file_ms'] / r['file_plain_ms']:.2f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    backends = [b for b, f in FILES.items() if (args.model_dir / f).is_file()]
    if not backends:
        sys.exit(f"error: {args.model_dir}: no model files")
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.file or synthetic_clip(Path(tmp) / "clip_5s.wav")
        seconds = common.load_audio(clip, 16000).size / 16000
        # cold starts first: the in-process latency runs import TensorFlow, which a child process never sees
        cold = {b: cold_start(args.model_dir, clip, b, args.runs) for b in backends}
        rows = []
        for b in backends:
            rows.append({"backend": b, "file": FILES[b], "size_mb": (args.model_dir / FILES[b]).stat().st_size / 1e6,
                         "cold_start_s": cold[b], **latencies(args.model_dir, clip, b, args.latency_runs)})
    skipped = sorted(set(FILES) - set(backends))
    print(f"{args.model_dir}, {seconds:.1f} s clip, {os.cpu_count()} CPUs, median of {args.runs} cold starts "
          f"and {args.latency_runs} calls" + (f"; no file for {', '.join(skipped)}" if skipped else "") + "\n")
    print(markdown(rows))
    common.atomic_write(args.out, json.dumps({
        "model_dir": str(args.model_dir), "clip": str(args.file or "synthetic 5 s 44.1 kHz stereo"),
        "clip_seconds": round(seconds, 2), "runs": args.runs, "latency_runs": args.latency_runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
