"""Benchmark the transfer variant: BirdNET embedding speed, prediction per backend, cold and warm training runs.

    python -m bench.transfer --model-dir model/transfer [--runs 3 --latency-runs 20]
    python -m bench.transfer --model-dir model/transfer --train --data-dir Animals_Sounds

- embedding: ms per 3 s window (one thread) reading the default backbone's
  tensors (BirdNET's embedding and third stage) the two ways LiteRT allows:
  as the outputs of the patched model (``core.backbones.with_outputs``, what
  the toolkit does) and as intermediate tensors with
  ``experimental_preserve_all_tensors``;
- per backend of --model-dir (a transfer model; run export.py first for ONNX
  and TFLite): cold start of ``predict.py --file`` on a 5 s clip, and with
  the model loaded, ``Classifier.classify`` on it (decode, BirdNET, head,
  calibration, open-set score) and the head alone;
- --train: wall time of ``transfer.py`` with an empty embedding cache (cold)
  and again with it filled (warm), into a scratch model directory.

Prints a markdown table and writes bench/results/transfer.json.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: BLAS threads fight on a shared 2-core box

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import common  # noqa: E402
from bench.bench_backends import cold_start, median_ms, synthetic_clip  # noqa: E402
from core import backbones  # noqa: E402
from core.backends import FILES  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=ROOT / "model" / "transfer", help="a trained transfer model")
    p.add_argument("--runs", type=int, default=3, help="cold starts per backend")
    p.add_argument("--latency-runs", type=int, default=20, help="timed calls per latency figure")
    p.add_argument("--train", action="store_true", help="also time a cold and a warm transfer.py run")
    p.add_argument("--data-dir", type=Path, default=ROOT / "Animals_Sounds", help="dataset for --train")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transfer.json")
    return p.parse_args(argv)


def embedding_ms(runs: int) -> dict:
    """Median ms per 3 s window of the default backbone's vector: patched outputs vs preserve_all_tensors."""
    from ai_edge_litert.interpreter import Interpreter
    birdnet = backbones.load_backbone(backbones.DEFAULT_BACKBONE)
    window = 0.1 * np.random.default_rng(0).standard_normal((1, birdnet.window_samples())).astype(np.float32)
    with warnings.catch_warnings():   # LiteRT warns that preserve_all_tensors is meant for debugging
        warnings.simplefilter("ignore", UserWarning)
        debug = Interpreter(model_path=str(birdnet.folder / birdnet.MODEL_FILE),
                            experimental_preserve_all_tensors=True, num_threads=1)
    debug.allocate_tensors()
    index = {t["name"]: t["index"] for t in debug.get_tensor_details()}

    def intermediate():
        debug.set_tensor(debug.get_input_details()[0]["index"], window)
        debug.invoke()
        return np.concatenate([debug.get_tensor(index[name])[0] for name in birdnet.OUTPUTS])

    return {"patched_output_ms": median_ms(lambda: birdnet.embed(window), runs),
            "preserve_all_tensors_ms": median_ms(intermediate, runs)}


def backend_row(model_dir: Path, clip: Path, backend: str, args) -> dict:
    """Cold start, file latency and head-only latency of one backend on the 5 s clip."""
    clf = common.Classifier(model_dir, backend)
    _, _, audio = next(common.iter_windows(clip, clf.cfg))
    x = clf.front_end.features(audio)[None]
    return {"cold_start_s": cold_start(model_dir, clip, backend, args.runs),
            "file_ms": median_ms(lambda: clf.classify(clip), args.latency_runs),
            "head_ms": median_ms(lambda: clf.predictor.predict(x), args.latency_runs)}


def training_seconds(data_dir: Path) -> dict:
    """Wall time of transfer.py with an empty embedding cache, then again with it filled."""
    times = {}
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        cmd = [sys.executable, str(ROOT / "transfer.py"), "--data-dir", str(data_dir), "--model-dir",
               f"{tmp}/model", "--charts-dir", f"{tmp}/charts", "--cache-dir", f"{tmp}/cache", "--quiet"]
        for run in ("cold", "warm"):
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True)
            times[f"{run}_run_s"] = time.perf_counter() - start
    return times


def main(argv=None):
    args = parse_args(argv)
    result = {"embedding": embedding_ms(args.latency_runs), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        clip = synthetic_clip(Path(tmp) / "clip.wav")
        for backend in FILES:
            if (args.model_dir / FILES[backend]).is_file():
                result["backends"][backend] = backend_row(args.model_dir, clip, backend, args)
    if args.train:
        result["training"] = training_seconds(args.data_dir)
    e = result["embedding"]
    print(f"BirdNET embedding per 3 s window: {e['patched_output_ms']:.1f} ms as the patched model's output, "
          f"{e['preserve_all_tensors_ms']:.1f} ms with preserve_all_tensors")
    print("\n| backend | cold start s | 5 s clip ms (loaded) | head ms |\n|---|---|---|---|")
    for backend, r in result["backends"].items():
        print(f"| {backend} | {r['cold_start_s']:.2f} | {r['file_ms']:.1f} | {r['head_ms']:.2f} |")
    for key, seconds in result.get("training", {}).items():
        print(f"transfer.py {key.replace('_', ' ')}: {seconds:.0f}")
    common.atomic_write(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
