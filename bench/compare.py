"""Train every variant on one split for several seeds and print one comparison table.

    python -m bench.compare                                   # all five variants, seeds 42 43 44
    python -m bench.compare --variants baseline enhance --seeds 42

The dataset is imported once (split seed 42) from --source into --work; each
variant script then runs as a user would run it (a subprocess with
--data-dir/--model-dir/--seed), and a classical reference is computed on the
same split: MFCC (+delta) mean/std statistics with a grid-searched RBF SVM.
Output: a markdown table of mean ± std to stdout and bench/results/compare.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
import common  # noqa: E402
from core.backends import MODEL_FILE  # noqa: E402

VARIANTS = {"baseline": "baseline.py", "mix_noise": "mix_noise.py", "alexnet": "train_alexnet.py",
            "transformer": "enhance_transformer.py", "enhance": "enhance.py"}
SHARED = ROOT.parent / "shared" / "data"


def mfcc_stats(y: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Mean and std over time of 20 MFCCs and their deltas: an 80-value summary of a clip."""
    import librosa
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
    delta = librosa.feature.delta(mfcc, width=max(3, width)) if mfcc.shape[1] >= 3 else np.zeros_like(mfcc)
    return np.concatenate([mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1)])


def svm_reference(data_dir: Path, seed: int) -> dict:
    """The classical baseline on the same split: grid-searched RBF SVM on MFCC statistics."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    data = common.load_splits(data_dir, common.FeatureConfig(), seed, with_audio=True)
    start = time.time()
    x_train = np.stack([mfcc_stats(y) for y in data.train.audio + data.val.audio])
    y_train = np.concatenate([data.train.y, data.val.y])   # the grid search cross-validates inside Training
    grid = GridSearchCV(make_pipeline(StandardScaler(), SVC(class_weight="balanced")),
                        {"svc__C": [1, 3, 10, 30, 100], "svc__gamma": ["scale", 0.003, 0.01, 0.03]},
                        cv=StratifiedKFold(5, shuffle=True, random_state=seed), scoring="f1_macro")
    grid.fit(x_train, y_train)
    train_seconds = time.time() - start
    test_audio = [common.load_audio(f, 16000, 16.0) for f in data.test.files]
    x_test = np.stack([mfcc_stats(y) for y in test_audio])
    start = time.time()
    probs = np.eye(len(data.classes))[grid.predict(x_test)]
    per_clip_ms = 1000 * (time.time() - start) / len(x_test)
    metrics, _, _ = common.evaluate(probs, data.test.y, data.classes)
    return {**metrics, "train_seconds": train_seconds, "size_mb": None, "ms_per_clip": per_clip_ms}


def run_variant(variant: str, data_dir: Path, work: Path, seed: int, extra: list, tag: str = "",
                threads: int | None = None) -> dict:
    """Train one variant as a user would, then measure its size and per-clip inference time.

    The model goes to ``work``/model/<variant><tag>-seed<seed>. ``threads`` caps
    TensorFlow's and BLAS's threads in the training process, for runs side by side.
    """
    env = dict(os.environ)
    if threads:
        env.update({k: str(threads) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                              "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    model_dir = work / "model" / f"{variant}{tag}-seed{seed}"
    cmd = [sys.executable, str(ROOT / VARIANTS[variant]), "--data-dir", str(data_dir), "--model-dir",
           str(model_dir), "--seed", str(seed), "--charts-dir", str(work / "charts"), "--quiet", *extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    clf = common.Classifier(model_dir)
    x = np.zeros((1, clf.cfg.n_frames, clf.cfg.n_mels), np.float32)
    clf.predict_features(x)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        clf.predict_features(x)
        times.append(time.perf_counter() - start)
    return {**{k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n_test", "train_seconds",
                                       "val_macro_f1", "epochs_run")},
            "size_mb": (model_dir / MODEL_FILE).stat().st_size / 1e6,
            "ms_per_clip": 1000 * float(np.median(times))}


def summarise(runs: dict, val: bool = False) -> str:
    """Markdown table of mean ± std over seeds for each row of ``runs`` (``val``: add validation macro-F1)."""
    cols = [("val_macro_f1", "val macro-F1", "{:.3f}")] * val + [
            ("accuracy", "test accuracy", "{:.3f}"), ("macro_f1", "macro-F1", "{:.3f}"),
            ("weighted_f1", "weighted F1", "{:.3f}"), ("train_seconds", "train s", "{:.0f}"),
            ("size_mb", "model MB", "{:.1f}"), ("ms_per_clip", "ms / clip", "{:.2f}")]
    lines = ["| variant | seeds | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, results in runs.items():
        cells = []
        for key, _, fmt in cols:
            values = [r[key] for r in results if r.get(key) is not None]
            cells.append("n/a" if not values else fmt.format(np.mean(values)) +
                         (f" ± {fmt.format(np.std(values))}" if len(values) > 1 else ""))
        lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def publish(runs: dict, seeds: list, name: str, val: bool = False) -> None:
    """Print the final table of ``runs`` and write it, with every run, to bench/results/<name>.json."""
    table = summarise(runs, val)
    print("\n" + table)
    out = ROOT / "bench" / "results" / f"{name}.json"
    common.atomic_write(out, json.dumps({"seeds": seeds, "runs": runs, "table": table}, indent=2))
    print(f"wrote {out}")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", type=Path, default=SHARED / "animal-sound-dataset")
    p.add_argument("--noise-source", type=Path, default=SHARED / "noise" / "wind")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "compare",
                   help="where the imported split, the models and their charts go")


def prepare_split(args) -> Path:
    """Import the dataset once into ``args.work`` (split seed 42, 20 % Test); returns its data dir."""
    data_dir = args.work / "Animals_Sounds"
    if not (data_dir / "Training").is_dir():
        common.import_dataset(args.source, data_dir, test_size=0.2, seed=42)
        common.import_noise(args.noise_source, data_dir)
    return data_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p.add_argument("--no-svm", action="store_true", help="skip the classical reference row")
    args, extra = p.parse_known_args(argv)   # anything else (e.g. --epochs 5) goes to every script
    data_dir = prepare_split(args)
    runs = {}
    for seed in args.seeds:
        if not args.no_svm:
            runs.setdefault("MFCC+SVM (reference)", []).append(svm_reference(data_dir, seed))
        for variant in args.variants:
            runs.setdefault(variant, []).append(run_variant(variant, data_dir, args.work, seed, extra))
        print(summarise(runs), flush=True)
    publish(runs, args.seeds, "compare")


if __name__ == "__main__":
    main()
