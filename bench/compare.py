"""Train every variant on one split for several seeds and print one comparison table.

    python -m bench.compare                                   # every variant, seeds 42 43 44
    python -m bench.compare --variants transfer enhance --seeds 42 43 44
    python -m bench.compare --variants transfer --no-svm --no-birdnet --name transfer-no-outliers --outliers none

The dataset is imported once (split seed 42) from --source into --work; each
variant script then runs as a user would run it (a subprocess with
--data-dir/--model-dir/--seed). Reference rows are computed on the same split
in the same run: MFCC (+delta) mean/std statistics with a grid-searched RBF
SVM (the classical reference), and BirdNET V2.4 embeddings (mean over a
clip's 3 s windows) with a standardised, class-balanced logistic regression
(the practitioner's recipe; needs the optional BirdNET extra, and shares
the transfer variant's embedding cache). When transfer and enhance both run,
a row for their ensemble (predict.py --model-dir A --model-dir B) follows,
scored by classifying each Test file as predict.py does. "ms / clip" is the
model alone on one window of features (for transfer: the head, not the
BirdNET embedding; see python -m bench.transfer).
Flags it does not know go to every script; --name keeps such a run's models
and table apart. Output: a markdown table of mean ± std to stdout and
bench/results/compare.json (<name>.json).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
import common  # noqa: E402
from core.backbones import DEFAULT_BACKBONE, BackboneUnavailable, BirdNET  # noqa: E402
from core.backends import MODEL_FILE  # noqa: E402
from core.front_ends import BackboneEmbeddings  # noqa: E402

# variant -> the command that trains it: a script, and the flags that choose the variant (train_rnn.py's --cell)
VARIANTS = {"baseline": "baseline.py", "mix_noise": "mix_noise.py", "alexnet": "train_alexnet.py",
            "transformer": "enhance_transformer.py", "enhance": "enhance.py", "transfer": "transfer.py",
            "vgg": "train_vgg.py", "lstm_attention": "train_lstm_attention.py",
            **{f"rnn_{cell}": f"train_rnn.py --cell {cell}" for cell in ("rnn", "lstm", "gru", "crnn")}}
MULTI_LABEL_METRICS = ("mAP", "mean_auc", "mixtures_mAP", "mixtures_mean_auc")   # the variants that report them
ENSEMBLE = ("transfer", "enhance")   # the variants whose ensemble gets a row when both run
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


def chunk_means(x: np.ndarray) -> np.ndarray:
    """(n, dim): the mean of each clip's real (non-zero) chunk embeddings in (n, chunks, dim)."""
    real = (np.abs(x).max(axis=-1, keepdims=True) > 0).astype(x.dtype)
    return (x * real).sum(axis=1) / np.maximum(real.sum(axis=1), 1)


def reference_recipe():
    """The practitioner's classifier: standardised, class-balanced logistic regression (scikit-learn's defaults)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000))


def birdnet_reference(data_dir: Path, seed: int, cache_dir: Path = common.DEFAULT_CACHE) -> dict:
    """The practitioner's recipe on the same split: BirdNET embeddings + logistic regression.

    Each clip is the mean of its 3 s windows' embeddings (BirdNET's 1024-d
    embedding alone, cached as the transfer variant's are); a standardised, class-balanced logistic
    regression with scikit-learn's defaults is fitted on all of Training.
    """
    front_end = BackboneEmbeddings(BirdNET.name).load()   # the practitioner's embedding, alone
    data = common.load_splits(data_dir, front_end.cfg, seed, with_audio=True, cache_dir=cache_dir)
    train, val, test = (front_end.featurize(part, cache_dir) for part in (data.train, data.val, data.test))
    start = time.time()
    model = reference_recipe()
    model.fit(chunk_means(np.concatenate([train.x, val.x])), np.concatenate([train.y, val.y]))
    train_seconds = time.time() - start
    start = time.time()
    probs = model.predict_proba(chunk_means(test.x))
    per_clip_ms = 1000 * (time.time() - start) / len(test.y)
    metrics, _, _ = common.evaluate(probs, test.y, data.classes)
    return {**metrics, "train_seconds": train_seconds, "size_mb": None, "ms_per_clip": per_clip_ms}


def ensemble_row(model_dirs: list, data_dir: Path) -> dict:
    """Scores of the ensemble of ``model_dirs`` on the Test files, each classified as predict.py would."""
    ensemble = common.load_classifier(model_dirs)
    files, labels = common.list_class_files(data_dir / "Test")
    probs, times = [], []
    for f in files:
        start = time.perf_counter()
        probs.append(ensemble.classify(f).probs)
        times.append(time.perf_counter() - start)
    metrics, _, _ = common.evaluate(np.stack(probs), np.array([ensemble.classes.index(c) for c in labels]),
                                    ensemble.classes)
    return {**metrics, "size_mb": sum((Path(d) / MODEL_FILE).stat().st_size for d in model_dirs) / 1e6,
            "ms_per_clip": 1000 * float(np.median(times))}


def model_dir_of(work: Path, variant: str, seed: int, tag: str = "") -> Path:
    """Where :func:`run_variant` puts ``variant``'s model for ``seed`` (``tag`` tells runs with other flags apart)."""
    return work / "model" / f"{variant}{tag}-seed{seed}"


def trained(variant: str, data_dir: Path, work: Path, seed: int, flags: list, tag: str = "",
            reuse: bool = False) -> Path:
    """The model directory of ``variant`` trained with ``flags``; with ``reuse``, an earlier run's if it finished."""
    model_dir = model_dir_of(work, variant, seed, tag)
    if not (reuse and (model_dir / "metrics.json").is_file()):
        run_variant(variant, data_dir, work, seed, flags, tag)
    return model_dir


def run_variant(variant: str, data_dir: Path, work: Path, seed: int, extra: list, tag: str = "",
                threads: int | None = None, folds: int = 1, env: dict | None = None, root: Path = ROOT) -> list[dict]:
    """Train one variant as a user would, then measure its size and per-clip inference time.

    Returns one row per test measurement: the run's, or with ``folds`` > 1
    (the script's ``--folds``) each fold's, all with the kept model's size
    and time. The model goes to ``work``/model/<variant><tag>-seed<seed>.
    ``threads`` caps TensorFlow's and BLAS's threads in the training process,
    for runs side by side; ``env`` adds environment variables to it. ``root``
    is the source tree whose script runs (another commit's checkout, to time it
    against this one); the model is measured with this tree's code.
    """
    env = {**os.environ, **(env or {})}
    if threads:
        env.update({k: str(threads) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                              "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    model_dir = model_dir_of(work, variant, seed, tag)
    script, *variant_flags = VARIANTS[variant].split()
    cmd = [sys.executable, str(root / script), *variant_flags, "--data-dir", str(data_dir), "--model-dir",
           str(model_dir), "--seed", str(seed), "--charts-dir", str(work / "charts"), "--quiet", *extra,
           *(["--folds", str(folds)] if folds > 1 else [])]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=root, env=env)
    run_seconds = time.perf_counter() - start
    tested = (json.loads((model_dir / "cv_metrics.json").read_text())["per_fold"] if folds > 1 else
              [json.loads((model_dir / "metrics.json").read_text())])
    clf = common.Classifier(model_dir)
    x = np.zeros((1, *clf.front_end.input_shape), np.float32)
    clf.predict_features(x)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        clf.predict_features(x)
        times.append(time.perf_counter() - start)
    return [{**{k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n_test", "train_seconds",
                                        "val_macro_f1", "epochs_run")},
             **{k: metrics[k] for k in MULTI_LABEL_METRICS if k in metrics},
             "run_seconds": run_seconds, "size_mb": (model_dir / MODEL_FILE).stat().st_size / 1e6,
             "ms_per_clip": 1000 * float(np.median(times))} for metrics in tested]


def summarise(runs: dict, val: bool = False, unit: str = "seeds") -> str:
    """Markdown table of mean ± std over the runs of each row of ``runs`` (``val``: add validation macro-F1).

    ``unit`` names what the runs are (seeds, or folds for cross-validation), in the header of their count.
    """
    cols = [("val_macro_f1", "val macro-F1", "{:.3f}")] * val + [
            ("accuracy", "test accuracy", "{:.3f}"), ("macro_f1", "macro-F1", "{:.3f}"),
            ("weighted_f1", "weighted F1", "{:.3f}"), ("train_seconds", "train s", "{:.0f}"),
            ("run_seconds", "whole run s", "{:.0f}"),
            ("size_mb", "model MB", "{:.1f}"), ("ms_per_clip", "ms / clip", "{:.2f}")]
    lines = [f"| variant | {unit} | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, results in runs.items():
        cells = []
        for key, _, fmt in cols:
            values = [r[key] for r in results if r.get(key) is not None]
            cells.append("n/a" if not values else fmt.format(np.mean(values)) +
                         (f" ± {fmt.format(np.std(values))}" if len(values) > 1 else ""))
        lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def publish(runs: dict, seeds: list, name: str, val: bool = False, folds: int = 1) -> None:
    """Print the final table of ``runs`` and write it, with every run, to bench/results/<name>.json."""
    table = summarise(runs, val, "folds" if folds > 1 else "seeds")
    print("\n" + table)
    out = ROOT / "bench" / "results" / f"{name}.json"
    common.atomic_write(out, json.dumps({"seeds": seeds, "folds": folds, "runs": runs, "table": table}, indent=2))
    print(f"wrote {out}")


@contextmanager
def worktree(commit: str, path: Path):
    """A checkout of ``commit`` at ``path`` beside this one (``git worktree``), removed on exit."""
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--force", "--detach", str(path), commit], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=True)


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
    p.add_argument("--no-birdnet", action="store_true",
                   help="skip the BirdNET + logistic regression reference row (it needs the optional BirdNET extra)")
    p.add_argument("--folds", type=int, default=1,
                   help="K > 1: cross-validate every variant over K folds of Training and Test together (the "
                        "seeds' protocol); the table is mean ± std over folds, in bench/results/compare-folds<K>.json")
    p.add_argument("--name", default="compare",
                   help="another name keeps a run with other script flags apart: its models are "
                        "model/<variant>-<name>-seed<S>, its table bench/results/<name>.json")
    args, extra = p.parse_known_args(argv)   # anything else (e.g. --epochs 5) goes to every script
    if args.folds > 1 and not (args.no_svm and args.no_birdnet):
        print("--folds: the reference rows and the ensemble are measured on the fixed split only; left out")
        args.no_svm = args.no_birdnet = True
    # keeps the fixed split's models and results apart from cross-validation's and from other flags'
    tag = ("" if args.name == "compare" else f"-{args.name}") + (f"-folds{args.folds}" if args.folds > 1 else "")
    if "transfer" in args.variants or not args.no_birdnet:
        try:
            BackboneEmbeddings(DEFAULT_BACKBONE).load()
        except BackboneUnavailable as e:
            sys.exit(f"error: {e}; or leave out the transfer variant and pass --no-birdnet")
    data_dir = prepare_split(args)
    runs = {}
    for seed in args.seeds:
        if not args.no_svm:
            runs.setdefault("MFCC+SVM (reference)", []).append(svm_reference(data_dir, seed))
        if not args.no_birdnet:
            runs.setdefault("BirdNET+LogReg (reference)", []).append(birdnet_reference(data_dir, seed))
        for variant in args.variants:
            runs.setdefault(variant, []).extend(run_variant(variant, data_dir, args.work, seed, extra, tag,
                                                            folds=args.folds))
        if set(ENSEMBLE) <= set(args.variants) and args.folds == 1:
            runs.setdefault(" + ".join(ENSEMBLE), []).append(ensemble_row(
                [model_dir_of(args.work, variant, seed, tag) for variant in ENSEMBLE], data_dir))
        print(summarise(runs, unit="folds" if args.folds > 1 else "seeds"), flush=True)
    publish(runs, args.seeds, args.name + (f"-folds{args.folds}" if args.folds > 1 else ""), folds=args.folds)


if __name__ == "__main__":
    main()
