"""Cross-validate transfer heads over Training: which backbone vector, pooling and penalty transfer.py should use.

    python -m bench.transfer_heads [--data-dir bench/results/compare/Animals_Sounds --folds 5 --repeats 6]

Every labelled Training clip is dealt into --folds folds by scikit-learn's
StratifiedGroupKFold (copies of one recording stay together), --repeats
times with other shuffles; each candidate is fitted on the other folds and
predicts the held-out one. The table gives macro-F1 and accuracy of these
out-of-fold predictions, mean and std over the repeats. Test is never read,
so the defaults chosen here are chosen on validation. The candidates:

- the practitioner's recipe (``bench.compare``'s reference row): standardised,
  class-balanced logistic regression on the mean of BirdNET's embeddings;
- transfer.py's logistic head (``build_head`` + ``fit_logistic``, animals
  only) on BirdNET's embedding alone, and on the embedding with the third
  stage (``birdnet-v2.4-stages``), by pooling and penalty C; fitted on 85 %
  of the other folds (clips drawn at random), as a run that holds its
  validation split out of the fit would be; with transfer.py's
  augmented draws of the training clips (its default settings, --draws 4);
  and with BirdNET's windows every 1.5 s instead of 3 s (transfer.py
  --hop-seconds 1.5), each clip's windows overlapping by half.

BirdNET's embedding is the first 1024 values of the stages vector (tested
equal in tests/test_backbones.py), so one embedding pass serves every row.
Writes bench/results/transfer_heads.json.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: BLAS threads fight on a shared 2-core box

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import common  # noqa: E402
import transfer  # noqa: E402
from bench.compare import chunk_means, reference_recipe  # noqa: E402
from core.backbones import BirdNET, BirdNETStages  # noqa: E402
from core.dataset import load_labelled, read_manifest  # noqa: E402
from core.folds import assign_folds, recording_groups  # noqa: E402
from core.front_ends import BackboneEmbeddings, split_audio  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# (row name, vector, pooling, C, share of the other folds fitted on, augmented draws per clip);
# "embedding": BirdNET's 1024 values alone
HEADS = [("logistic head, embedding, mean", "embedding", "mean", 1.0, 1.0, 0),
         ("logistic head, stages, mean, C=0.3", "stages", "mean", 0.3, 1.0, 0),
         ("logistic head, stages, mean (default)", "stages", "mean", 1.0, 1.0, 0),
         ("logistic head, stages, mean, C=3", "stages", "mean", 3.0, 1.0, 0),
         ("logistic head, stages, mean-max", "stages", "mean-max", 1.0, 1.0, 0),
         ("logistic head, stages, mean, 85 % of the other folds", "stages", "mean", 1.0, 0.85, 0),
         ("logistic head, stages, mean, + 4 augmented draws", "stages", "mean", 1.0, 1.0, 4),
         ("logistic head, stages, mean, windows every 1.5 s", "stages, hop 1.5 s", "mean", 1.0, 1.0, 0)]
REFERENCE = "practitioner's recipe (reference row)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "results" / "compare" / "Animals_Sounds",
                   help="an imported dataset (bench.compare's split by default)")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=6, help="shuffles of the folds (seeds 0 .. repeats-1)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transfer_heads.json")
    return p.parse_args(argv)


def reference_probs(x: np.ndarray, y: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    return reference_recipe().fit(chunk_means(x[~held_out]), y[~held_out]).predict_proba(chunk_means(x[held_out]))


def head_probs(versions: np.ndarray, y: np.ndarray, held_out: np.ndarray, n: int, blocks, pooling: str, c: float):
    """Probabilities of the held-out clean clips; ``versions`` (n, versions, chunks, dim), the clean ones first."""
    x = versions[:, 0]
    model = transfer.build_head(x.shape[1:], n, pooling, blocks, 0, 0.0, x[~held_out])
    transfer.fit_logistic(model, versions[~held_out], y[~held_out], n, c, balance=1.0)
    return np.asarray(model(x[held_out], training=False))


def main(argv=None):
    args = parse_args(argv)
    front_end = BackboneEmbeddings(BirdNETStages.name).load()
    training, _, classes, _ = load_labelled(args.data_dir, front_end.cfg, True, args.cache_dir)
    audio = split_audio(training, front_end.cfg, args.cache_dir)
    x, y, n = front_end.embed_clips(audio, args.cache_dir), training.y, len(classes)
    draws = max(row[-1] for row in HEADS)
    settings = transfer.make_parser().parse_args(["--data-dir", str(args.data_dir), "--cache-dir", str(args.cache_dir),
                                                  "--draws", str(draws)])   # transfer.py's augmentation
    stages = np.concatenate([x[:, None], transfer.augmented_draws(front_end, audio, settings)], axis=1)
    overlapping = BackboneEmbeddings(BirdNETStages.name, hop_seconds=1.5).load().embed_clips(audio, args.cache_dir)
    vectors = {"embedding": (x[:, None, :, :BirdNET.dim], BirdNET.blocks), "stages": (stages, BirdNETStages.blocks),
               "stages, hop 1.5 s": (overlapping[:, None], BirdNETStages.blocks)}
    files = [Path(f).relative_to(args.data_dir).as_posix() for f in training.files]
    groups = recording_groups(files, training.hashes, read_manifest(args.data_dir))
    scores = {name: [] for name in [REFERENCE] + [h[0] for h in HEADS]}
    for repeat in tqdm(range(args.repeats), desc="repeats"):
        folds = assign_folds(y, groups, args.folds, repeat)
        rng = np.random.default_rng(repeat)
        predicted = {name: np.zeros(len(y), int) for name in scores}
        for fold in range(args.folds):
            held_out = folds == fold
            predicted[REFERENCE][held_out] = reference_probs(x[..., :BirdNET.dim], y, held_out).argmax(axis=1)
            for name, vector, pooling, c, share, k in HEADS:
                versions, blocks = vectors[vector]
                keep = held_out | (rng.random(len(y)) < share)   # the rest is left out of the fit, as validation is
                probs = head_probs(versions[keep, :1 + k], y[keep], held_out[keep], n, blocks, pooling, c)
                predicted[name][held_out] = probs.argmax(axis=1)
        for name in scores:
            metrics, _, _ = common.evaluate(np.eye(n)[predicted[name]], y, classes)
            scores[name].append({"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"]})
    rows = {name: {f"{k}_{stat}": float(fn([s[k] for s in runs])) for k in ("macro_f1", "accuracy")
                   for stat, fn in (("mean", np.mean), ("std", np.std))} for name, runs in scores.items()}
    print(f"\n{args.folds}-fold cross-validation over Training ({len(y)} clips, {len(set(groups))} recordings), "
          f"{args.repeats} repeats\n\n| candidate | macro-F1 | accuracy |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} | "
              f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"folds": args.folds, "repeats": args.repeats, "n_clips": len(y),
                                    "rows": rows, "per_repeat": scores}, indent=2))


if __name__ == "__main__":
    main()
