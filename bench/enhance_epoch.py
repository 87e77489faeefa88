"""Where an epoch of enhance.py goes: augmentation, training steps, validation, and the fit as it runs.

    python -m bench.enhance_epoch [--data-dir bench/results/compare/Animals_Sounds] [--rounds 7]

Builds enhance.py's data (default flags, seed 42, the negatives included), its augmented
batches (``enhance.training_batches``) and its network, and times one epoch of each of the
settings below, the settings taking turns for --rounds rounds after a warm-up epoch each
(the fastest and the median epoch are reported: on a shared machine an epoch sometimes takes
twice as long, and turns spread that over all rows):
- the augmentation alone: every batch of one epoch drawn,
- ``model.fit`` on one epoch of those batches held in memory: without validation, with
  validation on the padded 500-frame windows, and on the clips' real frames alone
  (``common.length_bucketed``, the same outputs and loss),
- ``model.fit`` on the augmenting batches with real-frame validation, as enhance.py trains:
  without XLA (as it did before --xla), with it (its default), and with it at three-quarter
  widths (``--widths 48 96 144 192``),
and what enhance.py's default epochs take at each rate. Run it on otherwise idle cores. The
first rows run without XLA, as the rows of the README's earlier table did.
Writes bench/results/enhance_epoch.json and prints a markdown table.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: BLAS threads fight over shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import common  # noqa: E402
import enhance  # noqa: E402
from core.training import prepare_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "enhance_epoch.json"
THREE_QUARTER = tuple(w * 3 // 4 for w in enhance.WIDTHS)


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "results" / "compare" / "Animals_Sounds")
    p.add_argument("--rounds", type=int, default=7, help="timed epochs per setting, taking turns")
    bench = p.parse_args()
    common.keep_freed_memory()   # as every training run does (core.training.run_experiment)
    import keras
    args = enhance.make_parser().parse_args(["--data-dir", str(bench.data_dir), "--quiet"])
    keras.utils.set_random_seed(args.seed)
    data = prepare_data(args, True, common.LogMel(enhance.feature_config(args)))
    n = len(data.classes)
    batches = enhance.training_batches(data, args)

    def draw_epoch():
        return [batches[i] for i in range(len(batches))]

    epoch = draw_epoch()
    x, y = np.concatenate([b[0] for b in epoch]), np.concatenate([b[1] for b in epoch])
    padded = (data.val.x, common.one_hot(data.val.y, n))
    real_frames = common.length_bucketed(*padded, args.batch_size, 2 ** len(enhance.WIDTHS))

    def fitter(xla=False, widths=enhance.WIDTHS, **data_kwargs):
        model = enhance.build_model(None, data.train.x.shape[2], n, widths=widths, dropout=args.dropout)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="categorical_crossentropy", jit_compile=xla)
        return lambda: model.fit(epochs=1, verbose=0, **data_kwargs)

    in_memory = dict(x=x, y=y, batch_size=args.batch_size)
    settings = {"augmentation alone": draw_epoch,
                "steps, batches in memory": fitter(**in_memory),
                "steps + validation on padded windows, batches in memory": fitter(**in_memory, validation_data=padded),
                "steps + validation on real frames, batches in memory": fitter(**in_memory,
                                                                                validation_data=real_frames),
                "as enhance.py trains: augmenting batches + validation on real frames, without XLA": fitter(
                    x=batches, validation_data=real_frames),
                "the same, XLA": fitter(True, x=batches, validation_data=real_frames),
                "the same, XLA, three-quarter widths": fitter(True, THREE_QUARTER, x=batches,
                                                              validation_data=real_frames)}
    for run in settings.values():   # warm-up: tracing, first allocations
        run()
    times = {name: [] for name in settings}
    for _ in tqdm(range(bench.rounds), desc="rounds", unit="round"):
        for name, run in settings.items():
            times[name].append(seconds(run))
    rows = {name: (min(t), float(np.median(t))) for name, t in times.items()}
    print(f"\n{len(batches)} batches of {args.batch_size}, {len(data.val.y)} validation clips; {args.epochs} epochs "
          f"is enhance.py's default\n")
    print(f"| part | s / epoch, fastest | median | s / {args.epochs} epochs, fastest |\n|---|---:|---:|---:|")
    for name, (fastest, median) in rows.items():
        print(f"| {name} | {fastest:.2f} | {median:.2f} | {fastest * args.epochs:.0f} |")
    common.atomic_write(RESULTS, json.dumps({"seconds_per_epoch_fastest_median": rows, "batches": len(batches),
                                             "validation_clips": len(data.val.y), "all_times": times},
                                            indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
