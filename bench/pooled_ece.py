"""Calibration of several models measured together: the ECE of all their Test predictions pooled.

    python -m bench.pooled_ece --model-dirs bench/results/compare/model/enhance-transfer-enhance-shifted-seed4{2,3,4}

On 100-150 Test clips even a perfectly calibrated model measures an ECE of
about 0.05 (``ece_if_calibrated``: each clip's correctness drawn as a coin
of its confidence), so one model's ECE cannot show a target such as 0.03.
Models of one recipe (seeds, folds) with the same classes, pooled, give
several times the clips. For each model and for the pool: ECE before and
after its calibration, and what a perfectly calibrated model would measure
on the same clips with the same confidences, and the mean confidence
(calibrated) beside the accuracy. Each model reads the Test
clips of ``--data-dir`` through its own front end. Miscalibrations of
opposite sign in two models can cancel within a bin of the pool, so the
pooled figure complements each model's, it does not replace them.
Output: a markdown table on stdout and bench/results/<--name>.json.
"""
import argparse
import json
from pathlib import Path

import common
from bench.compare import ROOT
from bench.open_set import pooled_calibration, predictions_of
from core import ood_eval


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dirs", nargs="+", type=Path, required=True, help="models with the same classes")
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "results" / "compare" / "Animals_Sounds",
                   help="whose Test clips are scored (bench.compare's split by default)")
    p.add_argument("--name", default="pooled_ece", help="the results file: bench/results/NAME.json")
    args = p.parse_args(argv)
    runs = []
    for model_dir in args.model_dirs:
        clf = common.Classifier(model_dir, "keras")
        x, y = ood_eval.test_split(clf, args.data_dir, common.DEFAULT_CACHE)
        run = {"model_dir": str(model_dir), **predictions_of(clf, x, y)}
        runs.append({**run, **pooled_calibration([run])})
    rows = runs + [{"model_dir": f"all {len(runs)} pooled", **pooled_calibration(runs)}]
    lines = ["| model | Test clips | ECE before → after calibration | a perfectly calibrated model | "
             "mean confidence | accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model_dir']} | {r['n']} | {r['ece_uncalibrated']:.3f} → {r['ece']:.3f} | "
              f"{r['ece_if_calibrated']:.3f} | {r['confidence']:.3f} | {r['accuracy']:.3f} |" for r in rows]
    print("\n".join(lines))
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    common.atomic_write(out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": [{k: v for k, v in r.items() if not k.startswith("test_")}
                                                  for r in rows]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
