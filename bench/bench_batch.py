"""Benchmark predict.py --dir on a folder of clips and on hour-long files: throughput per worker count, memory.

    python -m bench.bench_batch [--model-dir model/enhance] [--clips 200] [--hours 2] [--workers 1 2]
                                [--rates 16000 48000] [--ray]

Generates its own audio in a temporary folder (synthetic calls over noise):
--clips clips of 5-60 s and --hours one-hour files, at each sample rate of
--rates (recorders write 48 kHz; 16 kHz, the model's rate, skips resampling).
Then, for each set and worker count, times a fresh

    python predict.py --dir SET --backend onnx --workers N --format csv --out TMP --no-resume

and, the same way, the command's fixed start-up cost (one 1 s clip), so that

- steady throughput = audio / (wall time - start-up): what an archive-sized run sees;
- x real time incl. start-up = audio / wall time: what this folder's run saw.

Peak memory is the maximum resident set size of ``predict.py --file HOUR``
(and of a --dir run over the hour files with --workers 1), read with
``getrusage(RUSAGE_CHILDREN)`` in a wrapper process that runs nothing else.
--ray adds rows for --engine ray (a local Ray with the most --workers CPUs);
their steady figures are n/a, because Ray's start-up (starting Ray, then
actors that import the toolkit: 20-35 s here) varies by more than a set's work.

The model is --model-dir, exported to ONNX first if it has no model.onnx. If
it does not exist, a tiny baseline is trained for 1 epoch on generated data
into bench/results/bench_batch_model/ (and reused next time); the inference
cost per window then is that of the baseline network, the lightest variant.
Prints a markdown table and writes bench/results/batch.json.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy; children inherit it

import numpy as np
import soundfile as sf

import common

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ROOT / "bench" / "results" / "bench_batch_model" / "baseline"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "model" / "enhance",
                   help=f"model to run (missing: a tiny baseline is trained into {TINY_MODEL})")
    p.add_argument("--clips", type=int, default=200, help="clips of 5-60 s in the clip set")
    p.add_argument("--hours", type=int, default=2, help="one-hour files in the hour set")
    p.add_argument("--rates", type=int, nargs="+", default=[16000, 48000], help="sample rates of the generated audio")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    p.add_argument("--ray", action="store_true", help="also time --engine ray")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    return p.parse_args(argv)


# ---------------------------------------------------------------- audio

def synthetic_audio(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1-3 s warbling call every few seconds: the content does not change the cost, the length does."""
    n = int(seconds * sr)
    y = 0.02 * rng.standard_normal(n).astype(np.float32)
    for start in range(0, n, int(4 * sr)):
        length = min(int(rng.uniform(1, 3) * sr), n - start)
        t = np.arange(length, dtype=np.float32) / sr
        pitch = rng.uniform(500, 4000)
        y[start:start + length] += 0.3 * np.sin(2 * np.pi * (pitch + 200 * np.sin(2 * np.pi * 5 * t)) * t)
    return y


def write_audio(path: Path, seconds: float, sr: int, rng: np.random.Generator) -> None:
    """A 16-bit WAV, written ten minutes at a time so an hour never sits in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(path), "w", sr, 1, "PCM_16", format="WAV") as f:
        for start in np.arange(0, seconds, 600.0):
            f.write(synthetic_audio(min(600.0, seconds - start), sr, rng))


def audio_sets(root: Path, n_clips: int, n_hours: int, sr: int) -> dict[str, tuple[Path, float]]:
    """{set name: (folder, seconds of audio)} for the clip set and the hour set at ``sr``."""
    rng = np.random.default_rng(sr)
    lengths = rng.uniform(5, 60, n_clips)
    for i, seconds in enumerate(lengths):
        write_audio(root / f"clips_{sr}" / f"clip{i:04d}.wav", seconds, sr, rng)
    for i in range(n_hours):
        write_audio(root / f"hours_{sr}" / f"hour{i}.wav", 3600.0, sr, rng)
    write_audio(root / f"startup_{sr}" / "one_second.wav", 1.0, sr, rng)
    return {f"{n_clips} clips of 5-60 s, {sr // 1000} kHz": (root / f"clips_{sr}", float(lengths.sum())),
            f"{n_hours} one-hour files, {sr // 1000} kHz": (root / f"hours_{sr}", 3600.0 * n_hours)}


# ---------------------------------------------------------------- model

def tiny_model() -> Path:
    """A baseline trained 1 epoch on generated calls (three 'species' of tones), exported to ONNX."""
    if (TINY_MODEL / common.ONNX_FILE).is_file():
        return TINY_MODEL
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for species, pitch in (("lowcall", 400.0), ("midcall", 1500.0), ("highcall", 4000.0)):
            folder = Path(tmp) / "src" / species
            folder.mkdir(parents=True)
            for i in range(12):
                t = np.arange(int(rng.uniform(1, 3) * 16000)) / 16000
                y = 0.3 * np.sin(2 * np.pi * pitch * rng.uniform(0.9, 1.1) * t) + 0.02 * rng.standard_normal(len(t))
                sf.write(str(folder / f"{i}.wav"), y.astype(np.float32), 16000)
        data = Path(tmp) / "data"
        common.import_dataset(Path(tmp) / "src", data, test_size=0.25, seed=0)
        run([sys.executable, str(ROOT / "baseline.py"), "--data-dir", str(data), "--model-dir", str(TINY_MODEL),
             "--epochs", "1", "--quiet", "--charts-dir", str(Path(tmp) / "charts"), "--cache-dir", str(Path(tmp) / "c")])
        run([sys.executable, str(ROOT / "export.py"), "--model-dir", str(TINY_MODEL), "--data-dir", str(data),
             "--cache-dir", str(Path(tmp) / "c")])
    return TINY_MODEL


def ready_model(model_dir: Path) -> Path:
    """``model_dir`` with an ONNX export (made now if missing), or the tiny baseline if it does not exist."""
    if not (model_dir / "config.json").is_file():
        print(f"{model_dir}: no trained model; using a tiny baseline ({TINY_MODEL})", file=sys.stderr)
        return tiny_model()
    if not (model_dir / common.ONNX_FILE).is_file():
        run([sys.executable, str(ROOT / "export.py"), "--model-dir", str(model_dir)])
    return model_dir


# ---------------------------------------------------------------- timing

def run(command: list[str]) -> float:
    """Wall time (s) of a subprocess, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {' '.join(command[:3])} ... failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def predict_dir(folder: Path, model: Path, out: Path, workers: int, engine: str) -> float:
    return run([sys.executable, str(ROOT / "predict.py"), "--dir", str(folder), "--model-dir", str(model),
                "--backend", "onnx", "--workers", str(workers), "--engine", engine, "--format", "csv",
                "--out", str(out), "--no-resume"])


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory (MB) of ``command``, measured from a wrapper whose only child it is."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return int(out.split()[-1]) / 1024


def timing_row(name: str, engine: str, workers: int, files: int, seconds: float, wall: float, startup: float,
               first: dict | None) -> dict:
    """One table row. Steady figures divide by wall time minus start-up; for Ray they are None, because
    its start-up (a local Ray, then actors that import the toolkit) varies by more than a set's work here."""
    steady = wall - startup if engine == "local" else None
    per_s = (lambda x: x / steady) if steady else (lambda x: None)
    row = {"set": name, "engine": engine, "workers": workers, "files": files, "audio_h": seconds / 3600,
           "wall_s": wall, "startup_s": startup, "files_per_s": per_s(files), "audio_h_per_s": per_s(seconds / 3600),
           "x_real_time": per_s(seconds), "x_real_time_incl_startup": seconds / wall}
    row["speedup"] = row["x_real_time"] / (first or row)["x_real_time"] if steady else None
    return row


def markdown(rows: list[dict]) -> str:
    def cell(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [("| audio | engine | workers | files | audio h | wall s | start-up s | files/s | audio h/s "
              "| x real time (steady) | x real time (incl. start-up) | steady speed-up vs 1 worker |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['set']} | {r['engine']} | {r['workers']} | {r['files']} | {r['audio_h']:.2f} | {r['wall_s']:.1f} "
              f"| {r['startup_s']:.1f} | {cell(r['files_per_s'], 1)} | {cell(r['audio_h_per_s'], 3)} "
              f"| {cell(r['x_real_time'], 0)} | {r['x_real_time_incl_startup']:.0f} | {cell(r['speedup'], 2)} |"
              for r in rows]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    model = ready_model(args.model_dir)
    runs = [("local", w) for w in args.workers] + ([("ray", max(args.workers))] if args.ray else [])
    rows, memory, load_before = [], {}, os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_batch-") as tmp:
        tmp = Path(tmp)
        for sr in args.rates:
            sets = audio_sets(tmp / "audio", args.clips, args.hours, sr)
            startup = {(e, w): predict_dir(tmp / "audio" / f"startup_{sr}", model, tmp / "out", w, e) for e, w in runs}
            for name, (folder, seconds) in sets.items():
                files = len(list(folder.iterdir()))
                for engine, workers in runs:
                    wall = predict_dir(folder, model, tmp / "out", workers, engine)
                    first = next((r for r in rows if r["set"] == name), None)
                    rows.append(timing_row(name, engine, workers, files, seconds, wall, startup[engine, workers], first))
            hour = next((tmp / "audio" / f"hours_{sr}").iterdir())
            predict = [sys.executable, str(ROOT / "predict.py"), "--model-dir", str(model), "--backend", "onnx"]
            memory[f"{sr // 1000} kHz"] = {
                "predict.py --file HOUR": peak_rss_mb([*predict, "--file", str(hour)]),
                "predict.py --dir HOURS --workers 1": peak_rss_mb(
                    [*predict, "--dir", str(hour.parent), "--workers", "1", "--format", "csv", "--out",
                     str(tmp / "out"), "--no-resume"])}
            shutil.rmtree(tmp / "audio")     # free the disk before the next rate
    load = os.getloadavg()[0]
    print(f"{model}, ONNX backend, {len(os.sched_getaffinity(0))} CPUs, load average {load_before:.1f} before, "
          f"{load:.1f} after\n")
    print(markdown(rows))
    print("\npeak resident memory (MB) of one run over a one-hour file:")
    for rate, figures in memory.items():
        print("  " + rate + ": " + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()))
    common.atomic_write(args.out, json.dumps({
        "model_dir": str(model), "clips": args.clips, "hours": args.hours, "rates": args.rates, "rows": rows,
        "peak_rss_mb": memory, "load_average": [load_before, load],
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))


if __name__ == "__main__":
    main()
