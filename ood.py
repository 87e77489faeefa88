"""Measure how well a model says "unknown": every open-set score, known Test clips against other sounds.

    python ood.py --model-dir model/enhance --ood-dir recordings/other_sounds
    python ood.py --model-dir model/enhance --ood-dir Animals_Sounds/Noise/wind --ood-dir city/ --mc-samples 20

Known clips are the Test split of the data the model was trained on (or
--data-dir); every recording under each --ood-dir counts with each of its
analysis windows, as predict.py would see them. For every score and OOD
folder: AUROC, FPR at 95 % TPR, AUPR, the share of OOD windows the model's
threshold rejects, and Test accuracy after rejection. Writes ood_report.csv,
roc_curves.png and centroid_distances.png (the seed's histogram) to --out.
"""
import argparse
import sys
from pathlib import Path

import common
from core import ood_eval


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, help="trained model directory (default: best trained variant)")
    p.add_argument("--ood-dir", type=Path, action="append", required=True,
                   help="a folder of recordings of none of the model's classes (repeatable)")
    p.add_argument("--data-dir", type=Path, help="dataset whose Test/ clips are the known sounds "
                                                 "(default: the one the model was trained on)")
    p.add_argument("--backend", choices=common.BACKENDS, default="keras",
                   help="model runtime; MC dropout needs keras (default: %(default)s)")
    p.add_argument("--mc-samples", type=int, default=20,
                   help="MC-dropout passes per clip (keras backend; 0: skip; default: %(default)s)")
    p.add_argument("--out", type=Path, help="report folder (default: <model-dir>/ood)")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE, help="feature cache")
    p.add_argument("--seed", type=int, default=0, help="fixes the MC-dropout masks (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        clf = common.Classifier(args.model_dir or common.default_model_dir(), args.backend)
        if clf.open_set is None:
            sys.exit(f"error: {clf.model_dir} was trained before open-set rejection: retrain it to score it")
        known_x, known_y = ood_eval.test_split(clf, args.data_dir or Path(clf.config["data_dir"]), args.cache_dir)
        ood_sets = {str(d): ood_eval.folder_windows(d, clf) for d in args.ood_dir}
    except (common.ModelDirError, common.AudioError, common.DatasetError) as e:
        sys.exit(f"error: {e}")
    mc_samples = args.mc_samples if clf.backend == "keras" else 0
    known_probs, known, unknown = ood_eval.score_sets(clf, known_x, ood_sets, mc_samples, args.seed)
    table = ood_eval.report(clf, known_probs, known_y, known, unknown, clf.open_set.keep)
    out = args.out or clf.model_dir / "ood"
    common.atomic_write(out / "ood_report.csv", table.to_csv(index=False))
    ood_eval.plot_roc(known, unknown, out / "roc_curves.png")
    ood_eval.plot_centroid_distances(known, unknown, clf.open_set.thresholds["cosine"], out / "centroid_distances.png")
    print(table[["score", "ood_set", "auroc", "fpr95", "aupr", "ood_rejected", "test_accuracy_after_rejection"]]
          .to_string(index=False, float_format="%.3f"))
    print(f"{len(known_y)} known Test clips, {', '.join(f'{len(x)} windows of {n}' for n, x in ood_sets.items())}; "
          f"the model rejects by {clf.open_set.score}; wrote ood_report.csv, roc_curves.png, "
          f"centroid_distances.png to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
