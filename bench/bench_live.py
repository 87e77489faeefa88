"""Benchmark live classification: processing time per hop, real-time factor, onset-to-label latency.

    python -m bench.bench_live [--model-dir model/baseline] [--seconds 30]

Audio is fed to live_predict's pipeline the way a 44.1 kHz microphone delivers
it (50 ms chunks, resampled in the pipeline), as fast as the pipeline takes it:

- per hop: the time one hop costs (resampling, ring buffer, features, model,
  smoothing), over --seconds of Test clips with the silence gate off so every
  hop runs the model; the real-time factor is that time over the hop duration.
- onset latency: quiet noise, then a tone at a known time; the stream time from
  the onset until the first hop labelled as non-silence is decided, i.e. when
  the 50 ms read that completes it arrives, plus its processing time. Onsets
  are spread over one hop so every phase of the hop grid is sampled.

Results go to bench/results/live.json.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as live_predict: no BLAS threads fighting for 2 cores

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import common  # noqa: E402
import live_predict  # noqa: E402
from core.backends import BACKENDS  # noqa: E402

RATE = 44100   # a typical microphone's native rate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "model" / "baseline")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="model runtime (see predict.py)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "Animals_Sounds", help="Test/ clips are streamed")
    p.add_argument("--seconds", type=float, default=30.0, help="audio streamed for the per-hop timing")
    p.add_argument("--window-seconds", type=float, default=2.5)
    p.add_argument("--hop-seconds", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "live.json")
    return p.parse_args(argv)


def clips_signal(data_dir: Path, seconds: float) -> np.ndarray:
    """``seconds`` of Test clips back to back at RATE, taking each class in turn."""
    by_class = [sorted(p for p in c.iterdir() if common.is_audio_file(p))
                for c in sorted((data_dir / "Test").iterdir()) if c.is_dir()]
    by_class = [clips for clips in by_class if clips]
    parts, n, i = [], 0, 0
    while n < seconds * RATE:
        clips = by_class[i % len(by_class)]
        parts.append(common.load_audio(clips[(i // len(by_class)) % len(clips)], RATE))
        n, i = n + len(parts[-1]), i + 1
    return np.concatenate(parts)[:int(seconds * RATE)]


def stream(pipeline, signal: np.ndarray):
    """Feed ``signal`` in 50 ms chunks; yield (stream seconds when the chunk arrived, processing s, hops)."""
    chunk = int(live_predict.CHUNK_SECONDS * RATE)
    for i in range(0, len(signal), chunk):
        t0 = time.perf_counter()
        hops = pipeline.feed(signal[i:i + chunk])
        yield min(i + chunk, len(signal)) / RATE, time.perf_counter() - t0, hops


def time_hops(clf, args) -> dict:
    """Processing time per hop over ``args.seconds`` of real clips (gate off: every hop runs the model)."""
    pipeline = live_predict.LivePipeline(clf, RATE, args.window_seconds, args.hop_seconds, 3, float("-inf"))
    busy, per_hop, hops = 0.0, [], 0
    for _, spent, new in stream(pipeline, clips_signal(args.data_dir, args.seconds)):
        busy += spent
        hops += len(new)
        if new:   # a 50 ms chunk completes at most one hop: this call's time is that hop's cost
            per_hop.append(spent)
    ms = 1000 * np.array(per_hop)
    return {"audio_seconds": args.seconds, "hops": hops, "hop_ms_median": float(np.median(ms)),
            "hop_ms_p95": float(np.percentile(ms, 95)), "hop_ms_max": float(ms.max()),
            "ms_per_hop_all_work": 1000 * busy / hops,   # including the chunks that only resample
            "real_time_factor": busy / hops / args.hop_seconds,
            "real_time_factor_p95": float(np.percentile(ms, 95)) / 1000 / args.hop_seconds}


def onset_latency(clf, args, onset: float) -> dict:
    """Latency from a tone starting at ``onset`` s (after -70 dBFS noise) to its first labelled hop."""
    rng = np.random.default_rng(0)
    n = int((onset + 2 * args.window_seconds) * RATE)
    signal = (10 ** (-70 / 20) * rng.standard_normal(n)).astype(np.float32)   # a quiet room, below the gate
    t = np.arange(n - int(onset * RATE)) / RATE
    signal[int(onset * RATE):] += (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)   # -23 dBFS
    pipeline = live_predict.LivePipeline(clf, RATE, args.window_seconds, args.hop_seconds)
    for arrived, spent, hops in stream(pipeline, signal):
        for hop in hops:
            if hop.label != "silence":
                return {"onset_s": onset, "window_end_s": hop.end, "label": hop.label,
                        "latency_s": arrived - onset + spent}
    raise RuntimeError(f"the tone at {onset} s was never labelled")


def main(argv=None):
    args = parse_args(argv)
    clf = common.Classifier(args.model_dir, args.backend)
    live_predict.warm_up(clf, args.window_seconds)
    timing = time_hops(clf, args)
    onsets = [onset_latency(clf, args, 3.0 + k * args.hop_seconds / 5) for k in range(5)]
    latencies = [o["latency_s"] for o in onsets]
    result = {"model_dir": str(args.model_dir), "backend": clf.backend, "window_seconds": args.window_seconds,
              "hop_seconds": args.hop_seconds, "source_rate": RATE, "chunk_seconds": live_predict.CHUNK_SECONDS,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), **timing,
              "onset_latency_s_mean": float(np.mean(latencies)), "onset_latency_s_max": float(max(latencies)),
              "onsets": onsets}
    print(f"{args.model_dir} ({clf.backend}): {args.window_seconds:g} s windows every {args.hop_seconds:g} s, "
          f"{RATE} Hz input in {1000 * live_predict.CHUNK_SECONDS:.0f} ms chunks, "
          f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f})")
    print(f"processing per hop: median {timing['hop_ms_median']:.1f} ms, p95 {timing['hop_ms_p95']:.1f} ms, "
          f"max {timing['hop_ms_max']:.1f} ms ({timing['hops']} hops over {args.seconds:g} s of Test clips)")
    print(f"real-time factor: {timing['real_time_factor']:.3f} (p95 hop: {timing['real_time_factor_p95']:.3f}; "
          f"target < 0.05)")
    print(f"onset to first labelled hop: mean {1000 * result['onset_latency_s_mean']:.0f} ms, "
          f"max {1000 * result['onset_latency_s_max']:.0f} ms over {len(onsets)} onset phases")
    common.atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
