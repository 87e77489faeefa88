"""Open-set rejection without held-out data: leave two classes out, and non-animal sounds kept out of training.

    python -m bench.open_set                                   # enhance, seeds 42 43 44, 5 pairs, both designs
    python -m bench.open_set --variants enhance baseline --seeds 42 --designs uniform --pairs 2
    python -m bench.open_set --seeds 42 --designs uniform --only-pairs 3 4   # the third and fourth pairs

On bench/compare.py's split, for every variant, seed and outlier design:

- **leave-classes-out**: the ten classes are shuffled into five disjoint
  pairs; for each pair a model is trained on the other eight (with outlier
  exposure on wind and the synthetic bank, as shipped). The pair's Training
  clips are the *validation* unknowns that choose the score; its Test clips
  are the unknowns every figure is reported on.
- **non-animal sounds**: a model trained on all ten classes with no
  negatives at all (so wind and the synthetic bank are kept out of its
  training) is scored against every wind window and a fresh synthetic bank;
  every leave-out model also classifies one hour each of pink, white and
  brown noise (a fresh draw), as a user's recorder would hand it over.

Every model is fed through its own front end (``config.json``): log-Mel
maps, MFCCs, or a backbone's embeddings for ``--variants transfer``.
Per score: AUROC and FPR at 95 % TPR, mean ± std over pairs and seeds; plus
ECE before/after calibration (each model's, and of all their Test predictions
pooled, where so few clips bias it less) and Test accuracy lost to rejection
(known classes, rejected clips counted as errors) with the model's own score. The
default score and design are the ones with the best validation AUROC.
With several seeds, each pair's models also form a seed ensemble (the mean
of their calibrated probabilities), scored on the same Test clips by its
max probability and entropy, with its accuracy and ECE: what three models
buy over one. It has no validation figure: each seed carves its own
validation split, so one seed's validation clips trained another.
Output: markdown tables on stdout and bench/results/open_set.json.
"""
import argparse
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

import common
from bench.compare import ROOT, add_data_flags, prepare_split, trained
from core import calibration, ood_eval, openset
from core.front_ends import front_end_of
from core.synthetic_noise import KINDS, iter_synthetic_noise, synthetic_noise

N_PAIRS = 5
HOUR_KINDS = ("pink", "white", "brown")   # the colours of noise of which each model hears an hour


def class_pairs(classes: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """The classes shuffled (fixed seed) into disjoint pairs."""
    order = np.random.default_rng(seed).permutation(sorted(classes))
    return [(str(order[i]), str(order[i + 1])) for i in range(0, len(order) - 1, 2)]


def without_classes(data_dir: Path, left_out: tuple, target: Path) -> Path:
    """A data folder of symlinks to ``data_dir`` without the ``left_out`` classes (Noise/ kept)."""
    for split in ("Training", "Test"):
        for folder in sorted((data_dir / split).iterdir()):
            link = target / split / folder.name
            if folder.name not in left_out and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(folder.resolve(), target_is_directory=True)
    if not (target / "Noise").exists():
        (target / "Noise").symlink_to((data_dir / "Noise").resolve(), target_is_directory=True)
    return target


def features_of(clf, folders: list[Path]) -> np.ndarray:
    """The model's input (its front end's) for every clip in ``folders`` (whole clips, as the Test split is read)."""
    files = sorted(f for d in folders for f in d.rglob("*") if f.is_file() and common.is_audio_file(f))
    labels = [clf.classes[0]] * len(files)
    clips, _ = common.load_clips(files, labels, clf.classes, clf.cfg, common.FeatureCache(common.DEFAULT_CACHE))
    return clf.front_end.featurize(clips, common.DEFAULT_CACHE).x


def model_split(clf, folder: Path, seed: int):
    """The split ``folder`` gives seed ``seed``, its validation and Test clips in the model's input."""
    split = common.load_splits(folder, clf.cfg, seed, cache_dir=common.DEFAULT_CACHE)
    featurize = functools.partial(clf.front_end.featurize, cache_dir=common.DEFAULT_CACHE)
    return dataclasses.replace(split, val=featurize(split.val), test=featurize(split.test))


def synthetic_bank(clf, seed: int, per_kind: int = 10, seconds: float = 5.0) -> np.ndarray:
    """The model's input for a synthetic bank drawn with a seed no training run uses."""
    rng = np.random.default_rng(10_000 + seed)
    return np.stack([clf.front_end.features(synthetic_noise(kind, seconds, clf.cfg.sr, rng))
                     for kind in KINDS for _ in range(per_kind)])


@functools.lru_cache(maxsize=len(HOUR_KINDS))   # one seed's hours: the pairs of a seed run in a row
def hour_of_noise(front_end: str, kind: str, seed: int) -> np.ndarray:
    """One hour of ``kind`` noise in 16 s windows every 8 s, as input for the front end ``front_end``.

    ``front_end`` is a model's config.json entries for it, as JSON. Kept
    while the pairs of a seed run: each of their models hears the same hour,
    which takes a backbone minutes to embed.
    """
    front = front_end_of(json.loads(front_end)).load()
    windows = common.SlidingWindows(front.cfg.window_samples, front.cfg.window_samples // 2)
    blocks = iter_synthetic_noise(kind, 3600.0, front.cfg.sr, 60.0, np.random.default_rng(seed))
    return np.stack([front.features(audio) for block in blocks for _, _, audio in windows.push(block)])


def hour_of_noise_unknown(clf, kind: str, seed: int) -> float:
    """Share of the 16 s windows of one hour of ``kind`` noise that the model calls unknown."""
    x = hour_of_noise(json.dumps(clf.front_end.config(), sort_keys=True), kind, seed)
    labels = [clf.decide(p, s)[0] for start in range(0, len(x), 64) for p, s in zip(*clf.analyse(x[start:start + 64]))]
    return float(np.mean([label == "unknown" for label in labels]))


def score_table(clf, known: np.ndarray, unknown: dict) -> dict:
    """AUROC and FPR95 of every deployable score, known clips against each set of unknown features."""
    _, known_scores = ood_eval.all_scores(clf, known)
    table = {}
    for name, x in unknown.items():
        _, scores = ood_eval.all_scores(clf, x)
        table[name] = {s: {"auroc": openset.auroc(known_scores[s], scores[s]),
                           "fpr95": openset.fpr_at_tpr(known_scores[s], scores[s])} for s in known_scores}
    return table


def seed_ensemble(model_dirs: list[Path], data_dir: Path, folder: Path, pair: tuple) -> dict:
    """The mean calibrated probabilities of ``model_dirs`` (one pair, several seeds) on the pair's Test clips."""
    clfs = [common.Classifier(d, "keras") for d in model_dirs]
    known = model_split(clfs[0], folder, 0).test   # Test: any seed's
    unknown = features_of(clfs[0], [data_dir / "Test" / c for c in pair])
    known_probs, unknown_probs = (np.mean([c.analyse(x)[0] for c in clfs], axis=0) for x in (known.x, unknown))
    scores = {"msp": openset.max_probability_score, "entropy": openset.entropy_score}
    return {"pair": pair, "members": [str(d) for d in model_dirs],
            "test": {name: {"auroc": openset.auroc(score(known_probs), score(unknown_probs)),
                            "fpr95": openset.fpr_at_tpr(score(known_probs), score(unknown_probs))}
                     for name, score in scores.items()},
            "accuracy": float(np.mean(known_probs.argmax(axis=1) == known.y)),
            "ece": calibration.expected_calibration_error(known_probs, known.y),
            "ece_if_calibrated": calibration.ece_if_calibrated(known_probs)}


def model_figures(model_dir: Path) -> dict:
    m = json.loads((model_dir / "metrics.json").read_text())
    return {"ece": m["ece"], "ece_uncalibrated": m["ece_uncalibrated"], "accuracy": m["accuracy"],
            "accuracy_lost": m["accuracy"] - m["accuracy_after_rejection"], "test_rejected": m["test_rejected"],
            "ood_score": m["ood_score"], "train_seconds": m["train_seconds"]}


def leave_pair_out(variant, data_dir, work, seed, pair, design, extra, reuse) -> dict:
    """Train without ``pair`` and score its Training (validation) and Test clips as unknown."""
    folder = without_classes(data_dir, pair, work / "lco" / "+".join(pair))
    model_dir = trained(variant, folder, work, seed, ["--outliers", design, *extra],
                        f"-{design}-without-{'+'.join(pair)}", reuse)
    clf = common.Classifier(model_dir, "keras")
    split = model_split(clf, folder, seed)
    unknown = {"validation": features_of(clf, [data_dir / "Training" / c for c in pair]),
               "test": features_of(clf, [data_dir / "Test" / c for c in pair])}
    val = score_table(clf, split.val.x, {"validation": unknown["validation"]})
    test = score_table(clf, split.test.x, {"test": unknown["test"]})
    hours = {kind: hour_of_noise_unknown(clf, kind, seed) for kind in HOUR_KINDS}
    probs = clf.analyse(split.test.x)[0]
    # what a perfectly calibrated model would measure on these few clips (recomputed: older models lack it)
    ece_floor = calibration.ece_if_calibrated(probs)
    return {"pair": pair, "validation": val["validation"], "test": test["test"], "hour_unknown": hours,
            **model_figures(model_dir), "ece_if_calibrated": ece_floor, "model_dir": str(model_dir),
            **predictions_of(clf, split.test.x, split.test.y, probs)}


def predictions_of(clf, x: np.ndarray, y: np.ndarray, probs: np.ndarray | None = None) -> dict:
    """Test labels ``y`` and the model's probabilities of ``x``, calibrated (``probs`` if given) and not, as lists."""
    probs = clf.analyse(x)[0] if probs is None else probs
    uncalibrated = calibration.activate(clf.predictor.run(np.asarray(x, np.float32))[0],
                                        clf.open_set.activation if clf.open_set else "softmax")
    return {"test_y": np.asarray(y).tolist(), "test_probs": np.round(probs, 6).tolist(),
            "test_probs_uncalibrated": np.round(uncalibrated, 6).tolist()}


def pooled_calibration(pair_runs: list[dict]) -> dict:
    """ECE before and after calibration of every model's Test predictions taken together, and its floor.

    One model's ECE is measured on about 100 clips, where even a perfectly
    calibrated model would measure about 0.06 (``ece_if_calibrated``); pooled
    over the models, that floor falls roughly as one over the square root of
    the clips. The models must share their number of classes (leave-two-out
    models of one variant do). Miscalibrations of opposite sign in two models
    can cancel within a bin, so the pooled figure complements each model's.
    """
    y = np.concatenate([r["test_y"] for r in pair_runs])
    after, before = (np.concatenate([np.asarray(r[key]) for r in pair_runs])
                     for key in ("test_probs", "test_probs_uncalibrated"))
    return {"n": len(y), "ece_uncalibrated": calibration.expected_calibration_error(before, y),
            "ece": calibration.expected_calibration_error(after, y),
            "ece_if_calibrated": calibration.ece_if_calibrated(after),
            # a mean confidence below the accuracy: under-confident after calibration
            "confidence": float(np.mean(after.max(axis=1))), "accuracy": float(np.mean(after.argmax(axis=1) == y))}


def non_animal(variant, data_dir, work, seed, extra, reuse) -> dict:
    """Train on all classes without negatives; score wind and a fresh synthetic bank."""
    model_dir = trained(variant, data_dir, work, seed, ["--outliers", "none", *extra], "-no-negatives", reuse)
    clf = common.Classifier(model_dir, "keras")
    split = model_split(clf, data_dir, seed)
    unknown = {"wind": ood_eval.folder_windows(data_dir / "Noise" / "wind", clf),
               "synthetic": synthetic_bank(clf, seed)}
    return {**score_table(clf, split.test.x, unknown), **model_figures(model_dir)}


def mean_std(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{np.mean(values):.3f}"


def tables(results: dict) -> str:
    """The markdown tables: held-out classes per score and design, non-animal sounds, calibration."""
    lines = []
    for variant, runs in results.items():
        lines += [f"\n**{variant}: two classes left out** (AUROC / FPR95 on their Test clips; validation AUROC "
                  "chooses)", "", "| design | score | validation AUROC | AUROC | FPR95 |", "|---|---|---|---|---|"]
        for design, pair_runs in runs["leave_out"].items():
            for score in pair_runs[0]["test"]:
                cells = [mean_std([r[part][score][key] for r in pair_runs])
                         for part, key in (("validation", "auroc"), ("test", "auroc"), ("test", "fpr95"))]
                lines.append(f"| {design} | {score} | " + " | ".join(cells) + " |")
            hours = {k: mean_std([r["hour_unknown"][k] for r in pair_runs]) for k in pair_runs[0]["hour_unknown"]}
            lines.append(f"| {design} | model's own score ({', '.join(sorted({r['ood_score'] for r in pair_runs}))}): "
                         f"ECE {mean_std([r['ece_uncalibrated'] for r in pair_runs])} → "
                         f"{mean_std([r['ece'] for r in pair_runs])} (a perfectly calibrated model: "
                         f"{mean_std([r['ece_if_calibrated'] for r in pair_runs])}); Test accuracy lost to rejection "
                         f"{mean_std([r['accuracy_lost'] for r in pair_runs])}; one hour of noise called unknown "
                         f"{hours} | | | |")
            pooled = pooled_calibration(pair_runs)
            lines.append(f"| {design} | the {len(pair_runs)} models' {pooled['n']} Test predictions pooled: ECE "
                         f"{pooled['ece_uncalibrated']:.3f} → {pooled['ece']:.3f} (a perfectly calibrated model: "
                         f"{pooled['ece_if_calibrated']:.3f}); mean confidence {pooled['confidence']:.3f} at accuracy "
                         f"{pooled['accuracy']:.3f} | | | |")
        for design, pair_runs in runs.get("seed_ensemble", {}).items():
            for score in pair_runs[0]["test"]:
                cells = [mean_std([r["test"][score][key] for r in pair_runs]) for key in ("auroc", "fpr95")]
                lines.append(f"| {design} | seed ensemble, {score} | – | " + " | ".join(cells) + " |")
            lines.append(f"| {design} | seed ensemble ({len(pair_runs[0]['members'])} seeds, {len(pair_runs)} pairs): "
                         f"Test accuracy {mean_std([r['accuracy'] for r in pair_runs])}, ECE "
                         f"{mean_std([r['ece'] for r in pair_runs])} (a perfectly calibrated model: "
                         f"{mean_std([r['ece_if_calibrated'] for r in pair_runs])}) | | | |")
        if runs["non_animal"]:
            rows = runs["non_animal"]
            lines += [f"\n**{variant}: non-animal sounds never seen in training** (AUROC / FPR95)", "",
                      "| score | wind AUROC | wind FPR95 | synthetic AUROC | synthetic FPR95 |",
                      "|---|---|---|---|---|"]
            for score in rows[0]["wind"]:
                cells = [mean_std([r[s][score][k] for r in rows]) for s in ("wind", "synthetic")
                         for k in ("auroc", "fpr95")]
                lines.append(f"| {score} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p)
    p.set_defaults(work=ROOT / "bench" / "results" / "open_set")
    p.add_argument("--variants", nargs="+", default=["enhance"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p.add_argument("--designs", nargs="+", default=["uniform", "background"], choices=["uniform", "background"])
    p.add_argument("--pairs", type=int, default=N_PAIRS, help="how many of the five class pairs to leave out")
    p.add_argument("--only-pairs", nargs="+", type=int, choices=range(1, N_PAIRS + 1),
                   help="leave out these of the five pairs (numbered 1-5) instead of the first --pairs")
    p.add_argument("--no-non-animal", action="store_true", help="skip the run without negatives")
    p.add_argument("--name", default="open_set", help="the results file: bench/results/NAME.json")
    p.add_argument("--reuse", action="store_true", help="score the models an earlier run finished instead of "
                                                        "training them again")
    args, extra = p.parse_known_args(argv)   # anything else (e.g. --epochs 5) goes to every training
    data_dir = prepare_split(args)
    every_pair = class_pairs([d.name for d in (data_dir / "Training").iterdir() if d.is_dir()])
    pairs = [every_pair[k - 1] for k in args.only_pairs] if args.only_pairs else every_pair[:args.pairs]
    results = {}
    for variant in args.variants:
        runs = results.setdefault(variant, {"leave_out": {}, "non_animal": []})
        for seed in args.seeds:
            for design in args.designs:
                for pair in pairs:
                    runs["leave_out"].setdefault(design, []).append(
                        leave_pair_out(variant, data_dir, args.work, seed, pair, design, extra, args.reuse))
            if not args.no_non_animal:
                runs["non_animal"].append(non_animal(variant, data_dir, args.work, seed, extra, args.reuse))
            print(tables(results), flush=True)
        if len(args.seeds) > 1:
            for design, pair_runs in runs["leave_out"].items():
                runs.setdefault("seed_ensemble", {})[design] = [
                    seed_ensemble([Path(r["model_dir"]) for r in pair_runs if r["pair"] == pair], data_dir,
                                  args.work / "lco" / "+".join(pair), pair) for pair in pairs]
    text = tables(results)
    print(text)
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    common.atomic_write(out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "extra": extra,
                                         "pairs": pairs, "results": results, "tables": text}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
