"""What validation says of the transfer + enhance ensemble, and of weighting its two members.

    python -m bench.ensemble_validation --name transfer-enhance-shifted   # the models of that bench.compare run

``transfer.py`` refits its head on Training and validation together
(``--refit``), so a shipped transfer model has seen its validation clips.
For each seed this bench trains ``transfer.py`` once more with
``--no-refit`` (deterministic, seconds once the embeddings are cached),
which keeps that seed's validation split held out, and scores on it the
members alone and combined: the weighted mean of their calibrated
probabilities (``predict.py --model-dir A --model-dir B`` is weight 0.5)
and their weighted geometric mean, for transfer's weight from 0 (enhance
alone) to 1 (transfer alone). Beside it, the same combinations of the
shipped models on Test, reported only. Each member classifies every file
as ``predict.py`` would with that member alone, averaging the windows it
accepts; ``predict.py``'s ensemble averages the windows the pair accepts,
so at weight 0.5 its figures can differ by a clip or two. Output: a
markdown table on stdout and bench/results/ensemble_validation-<name>.json.
"""
import argparse
import json

import numpy as np

import common
from bench.compare import ROOT, add_data_flags, model_dir_of, prepare_split, trained
from core.calibration import negative_log_likelihood

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)   # transfer's weight; enhance's is 1 - it


def weighted_mean(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """``w * a + (1 - w) * b``: rows of probabilities stay rows of probabilities."""
    return w * a + (1 - w) * b


def weighted_geometric_mean(a: np.ndarray, b: np.ndarray, w: float, floor: float = 1e-9) -> np.ndarray:
    """Rows proportional to ``a ** w * b ** (1 - w)`` (``floor`` keeps a zero from vetoing a class), summing to 1."""
    p = np.exp(w * np.log(np.maximum(a, floor)) + (1 - w) * np.log(np.maximum(b, floor)))
    return p / p.sum(axis=1, keepdims=True)


RULES = {"mean": weighted_mean, "geometric mean": weighted_geometric_mean}


def file_probs(clf, files: list) -> np.ndarray:
    """Calibrated probabilities of each file, as ``predict.py`` gives them with the model ``clf`` alone."""
    return np.stack([clf.classify(f).probs for f in files])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p)
    p.add_argument("--name", default="compare", help="the bench.compare run whose transfer and enhance models to use")
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    args = p.parse_args(argv)
    data_dir = prepare_split(args)
    tag = "" if args.name == "compare" else f"-{args.name}"
    test_files, test_labels = common.list_class_files(data_dir / "Test")
    scores = {}   # (rule, weight, part) -> per-seed {macro_f1, accuracy, nll}
    for seed in args.seeds:
        held_out_dir = trained("transfer", data_dir, args.work, seed, ["--no-refit"], f"{tag}-no-refit", reuse=True)
        enhance_clf = common.Classifier(model_dir_of(args.work, "enhance", seed, tag))
        classes, val = enhance_clf.classes, common.load_splits(data_dir, enhance_clf.cfg, seed).val
        parts = {"validation": (held_out_dir, val.files, val.y),
                 "Test": (model_dir_of(args.work, "transfer", seed, tag), test_files,
                          np.array([classes.index(c) for c in test_labels]))}
        for part, (transfer_dir, files, y) in parts.items():
            transfer, enhance = file_probs(common.Classifier(transfer_dir), files), file_probs(enhance_clf, files)
            for rule, combine in RULES.items():
                for w in WEIGHTS:
                    probs = combine(transfer, enhance, w)
                    metrics, _, _ = common.evaluate(probs, y, classes)
                    scores.setdefault(f"{rule}|{w}|{part}", []).append(
                        {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
                         "nll": negative_log_likelihood(probs, y)})
    lines = ["| combination | transfer's weight | validation macro-F1 | validation accuracy | validation NLL | "
             "Test macro-F1 (per seed) |", "|---|---|---|---|---|---|"]
    for rule in RULES:
        for w in WEIGHTS:
            val, test = scores[f"{rule}|{w}|validation"], scores[f"{rule}|{w}|Test"]
            mean = {k: np.mean([s[k] for s in val]) for k in ("macro_f1", "accuracy", "nll")}
            per_seed = " / ".join(f"{s['macro_f1']:.3f}" for s in test)
            lines.append(f"| {rule} | {w:g} | {mean['macro_f1']:.3f} | {mean['accuracy']:.3f} | {mean['nll']:.3f} | "
                         f"{np.mean([s['macro_f1'] for s in test]):.3f} ({per_seed}) |")
    print("\n".join(lines))
    out = ROOT / "bench" / "results" / f"ensemble_validation-{args.name}.json"
    common.atomic_write(out, json.dumps({"seeds": args.seeds, "name": args.name, "scores": scores,
                                         "table": "\n".join(lines)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
