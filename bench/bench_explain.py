"""Benchmark of the explanations on the real Test split: every method's metrics next to the random mask, and speed.

    python -m bench.bench_explain [--model-dir model/enhance] [--per-class 4] [--slow-per-class 1]
                                  [--file Animals_Sounds/Test/bird/Kus_184.wav]

The gradient methods (and attention, for a model with it) run on up to --per-class Test
clips of each class, LIME and SHAP on --slow-per-class, each clip's model window
explained for the predicted class as explain.py does (explain.explain_window). The table
averages every metric per method and mask type, with the insertion - deletion AUC gap
next to the random mask's on the same clips. Speed on --file (a 5 s clip), for the gradient
methods and for LIME + SHAP: each method's compute time (median over the clips above),
explain.py's whole work on the file with the model loaded (methods, metrics, curves,
pictures, audio, page), a whole explain.py process on each backend (imports and the model
load included: onnxruntime on the explanation graphs, which the bench has export.py write
if the model directory lacks them, and TensorFlow on the Keras model), and a process that
only imports TensorFlow and loads the Keras model. The metrics and the in-process times are
of the Keras model. Writes bench/results/explain.csv and prints a markdown table.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: BLAS threads fight over shared cores

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import common
import explain
from core import explain_graphs
from core.model_data import default_data_dir, split_clips

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "explain.csv"
SLOW = ("lime", "shap")
TARGET_SECONDS = {"gradient": 5.0, "lime+shap": 60.0}
BACKENDS = {"onnx": "the explanation graphs (onnxruntime)", "keras": "the Keras model (TensorFlow)"}


def pick(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` clips of each class."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])


def explain_clips(explainer, clf, clips, idx, methods, args) -> pd.DataFrame:
    """explain.explain_window's metrics rows for the clips ``idx``, with the clip index."""
    parts = []
    for i in tqdm(idx, desc=" ".join(methods), unit="clip"):
        c = int(clf.predict_features(clips.x[i:i + 1])[0].argmax())
        _, metrics, _, _ = explain.explain_window(explainer, clips.x[i], c, methods, args)
        parts.append(metrics.assign(clip_index=int(i)))
    return pd.concat(parts, ignore_index=True)


def summarise(metrics: pd.DataFrame, group: str) -> pd.DataFrame:
    """Mean metrics per method and mask, with the insertion-deletion gap and the random mask's gap on the same clips."""
    table = metrics.drop(columns=["n", "clip_index"]).groupby(["method", "mask"], sort=False)
    table = table.mean().reset_index()
    table["gap"] = table.insertion_auc - table.deletion_auc
    table["random_gap"] = table[table.method == "random"].gap.iloc[0]
    table["clips"] = metrics.clip_index.nunique()
    table["group"] = group
    return table


def in_process_seconds(explainer, clf, clip: Path, methods, settings) -> float:
    """Wall time of explain.explain_file on ``clip`` with the model loaded: methods, metrics, pictures, audio, page."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        explain.explain_file(explainer, clf, clip, methods, settings, Path(out))
        return time.perf_counter() - start


def command_seconds(model_dir: Path, clip: Path, methods, backend: str) -> float:
    """Wall time of one explain.py run on ``clip`` with ``backend`` (a fresh process: imports, model load, outputs)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "explain.py"), "--model-dir", str(model_dir), "--file", str(clip),
                        "--out", out, "--methods", *methods, "--backend", backend], check=True, capture_output=True)
        return time.perf_counter() - start


def load_seconds(model_dir: Path) -> float:
    """Wall time of a process that only imports the toolkit (TensorFlow, Keras) and loads the model, as explain.py
    does before it explains anything on the Keras model: the floor under that whole command."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys, common; common.Classifier(sys.argv[1], backend='keras')",
                    str(model_dir)], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=Path("model/enhance"))
    p.add_argument("--per-class", type=int, default=4, help="Test clips per class for the gradient methods")
    p.add_argument("--slow-per-class", type=int, default=1, help="Test clips per class for LIME and SHAP")
    p.add_argument("--file", type=Path, default=Path("Animals_Sounds/Test/bird/Kus_184.wav"),
                   help="the clip explain.py is timed on")
    args = p.parse_args()
    from core.saliency import Explainer
    settings = explain.parse_args(["--file", str(args.file)])          # explain.py's defaults
    clf = common.Classifier(args.model_dir, backend="keras")
    clips = split_clips(default_data_dir(clf.config), "Test", clf.classes, clf.front_end, common.DEFAULT_CACHE)
    explainer = Explainer(clf.predictor.model, settings.patch, settings.lime_samples, settings.shap_samples,
                          settings.seed)
    methods = explain.choose_methods(explainer, None)
    fast = [m for m in methods if m not in SLOW]
    groups = {"gradient": (fast, pick(clips.y, args.per_class)),
              "lime+shap": (list(SLOW), pick(clips.y, args.slow_per_class))}
    tables, per_clip = [], []
    for group, (chosen, idx) in groups.items():
        metrics = explain_clips(explainer, clf, clips, idx, chosen, settings)
        tables.append(summarise(metrics, group))
        per_clip.append(metrics.assign(group=group))
    table = pd.concat(tables, ignore_index=True)
    seconds = pd.concat(per_clip).groupby("method").seconds.median()
    table["seconds_per_clip"] = table.method.map(seconds)
    loaded = {group: in_process_seconds(explainer, clf, args.file, chosen, settings)
              for group, (chosen, _) in groups.items()}
    if not explain_graphs.has_graphs(args.model_dir):
        print(f"{args.model_dir} has no explanation graphs: python export.py --model-dir {args.model_dir}", flush=True)
        subprocess.run([sys.executable, str(ROOT / "export.py"), "--model-dir", str(args.model_dir)], check=True,
                       capture_output=True)
    wall = {(group, backend): command_seconds(args.model_dir, args.file, chosen, backend)
            for group, (chosen, _) in groups.items() for backend in BACKENDS}
    floor = load_seconds(args.model_dir)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    common.atomic_write(RESULTS, table.to_csv(index=False))

    columns = ["AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "deletion_auc", "insertion_auc", "gap", "random_gap"]
    print(f"model {args.model_dir}; {table.clips.max()} Test clips for the gradient methods, "
          f"{table[table.group == 'lime+shap'].clips.max()} for LIME and SHAP\n")
    print("| method | mask | clips | " + " | ".join(columns) + " | s / clip |")
    print("|---|---|---:|" + "---:|" * (len(columns) + 1))
    for _, row in table[~((table.method == "random") & (table.group == "lime+shap"))].iterrows():
        speed = "" if row.method == "random" else f"{row.seconds_per_clip:.2f}"
        print(f"| {row.method} | {row['mask']} | {row.clips} | " + " | ".join(f"{row[c]:.3f}" for c in columns)
              + f" | {speed} |")
    ranked = table[(table.method != "random") & (table["mask"] == "binary")].sort_values("gap")
    best = ranked.iloc[-1]
    print(f"\nbest insertion-deletion gap: {best.method} {best.gap:.3f} (random mask on the same clips: "
          f"{best.random_gap:.3f}); worst: {ranked.iloc[0].method} {ranked.iloc[0].gap:.3f}")
    for group, (chosen, _) in groups.items():
        compute = table[(table.group == group) & (table["mask"] == "binary")].seconds_per_clip.sum()
        print(f"\n{args.file}, {group} ({' '.join(chosen)}): methods' compute {compute:.1f} s per clip (median); "
              f"explain.py's work with the model loaded {loaded[group]:.1f} s; the whole command "
              + ", ".join(f"{wall[group, b]:.1f} s with {BACKENDS[b]}" for b in BACKENDS)
              + f" (target < {TARGET_SECONDS[group]:.0f} s)")
    print(f"\na process that only imports the toolkit with TensorFlow and loads the Keras model: {floor:.1f} s")


if __name__ == "__main__":
    main()
