"""What each ingredient of enhance.py buys: train it with one ingredient changed at a time.

    python -m bench.ablate_enhance                 # seed 42, every row below
    python -m bench.ablate_enhance --seeds 42 43 --rows full no-crop no-wind
    python -m bench.ablate_enhance --jobs 2        # two trainings side by side, one thread each
    python -m bench.ablate_enhance --rows full --baseline 5201aea --seeds 42 43 44   # today's code against older code

Uses bench/compare.py's split (imported once into bench/results/compare) and
runs enhance.py as a user would; models, results.csv and charts go to
bench/results/compare/ablation, apart from the comparison's. Each row is the
full recipe with one change; validation macro-F1 is shown beside the Test
figures because it is what a change should be judged on (Test is only
reported). ``--baseline COMMIT`` adds a row: enhance.py as it was at that
commit, checked out beside the work folder (git worktree) with its own feature
cache, which one untimed epoch fills first; its runs alternate with the
others', so both see the same machine. Output: a markdown table to stdout and
bench/results/<--name>.json.
"""
import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench.compare import add_data_flags, prepare_split, publish, run_variant, summarise, worktree
from bench.wind_robustness import EARLIER, WINDY
from enhance import WIDTHS

THREE_QUARTER = ["--widths", *(str(w * 3 // 4) for w in WIDTHS)]
ROWS = {   # short name: (what changes, enhance.py flags[, environment])
    "full": ("the full recipe", []),
    "no-wind": ("no wind mixing", ["--p-noise", "0"]),
    "no-tilt": ("no spectral tilt", ["--tilt", "0"]),
    "specaugment": ("+ SpecAugment (2 time masks of up to 40 frames, 2 Mel masks of up to 16 bins)",
                    ["--time-mask", "40", "--freq-mask", "16"]),
    "mild-specaugment": ("+ milder SpecAugment (up to 10 frames, 8 bins)", ["--time-mask", "10", "--freq-mask", "8"]),
    "no-balance": ("plain shuffling instead of balanced sampling", ["--balance", "0"]),
    "class-weights": ("class weights instead of balanced sampling", ["--balance", "0", "--class-weights"]),
    "no-smoothing": ("no label smoothing", ["--label-smoothing", "0"]),
    "mixup": ("+ mixup (alpha 0.2)", ["--mixup", "0.2"]),
    "plateau": ("ReduceLROnPlateau from 1e-3 instead of warm-up + cosine", ["--lr-schedule", "plateau", "--lr", "1e-3"]),
    "no-crop": ("whole 500-frame windows instead of 4 s excerpts", ["--crop-frames", "0"]),
    "epochs-30": ("30 epochs (the cosine schedule ends there) instead of 80", ["--epochs", "30"]),
    "epochs-40": ("40 epochs (the cosine schedule ends there) instead of 80", ["--epochs", "40"]),
    "epochs-60": ("60 epochs (the cosine schedule ends there) instead of 80", ["--epochs", "60"]),
    "no-xla": ("the training step without XLA (the same network and recipe)", ["--no-xla"]),
    "widths-3q": ("three-quarter widths (48, 96, 144, 192 filters)", THREE_QUARTER),
    "widths-3q-epochs-60": ("three-quarter widths, 60 epochs", [*THREE_QUARTER, "--epochs", "60"]),
    "windy": ("wind in 3 clips of 4 at 0-25 dB (the windy-site option of 2026-12-05)", WINDY),
    "calm": ("the wind settings until 2026-12-05: wind in half the clips at 5-25 dB, no synthetic winds", EARLIER),
    "no-shifted": ("no animal clips played at speed 0.5 and 2 among the negatives (the recipe until 2026-12-06)",
                   ["--no-shifted-negatives"]),
    "glibc-malloc": ("glibc's default allocator, which maps and unmaps large blocks (core.allocator)", [],
                     {"ANIMAL_SOUNDS_KEEP_FREED_MEMORY": "0"}),
    "first-run": ("compiling every run, as a machine's first run does (no XLA programs kept, core.compile_cache)",
                  [], {"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory="}),
}


def cache_flags(tree: Path) -> list:
    """enhance.py's flags for the feature cache of another commit's checkout ``tree``."""
    return ["--cache-dir", str(tree / ".cache")]


@contextmanager
def checkout(commit: str, work: Path, data_dir: Path):
    """A worktree of ``commit`` in ``work`` with its feature cache filled (one untimed epoch); removed after."""
    with worktree(commit, work / f"tree-{commit}") as tree:
        print(f"filling {commit}'s feature cache (one untimed epoch)", flush=True)
        run_variant("enhance", data_dir, work, 0, ["--epochs", "1", *cache_flags(tree)], f"-{commit}-warm", root=tree)
        yield tree


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p)
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="which rows to run")
    p.add_argument("--name", default="ablation", help="results file: bench/results/<name>.json")
    p.add_argument("--baseline", metavar="COMMIT",
                   help="add a row: enhance.py at this commit (defaults as they were then), alternating with the rows")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings at once, each on (cores / jobs) threads; train times then reflect a shared machine")
    args = p.parse_args(argv)
    data_dir = prepare_split(args)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    work = args.work / "ablation"
    rows = dict(ROWS)
    if args.baseline:
        rows[args.baseline] = (f"enhance.py at commit {args.baseline}", [])
    names = args.rows + ([args.baseline] if args.baseline else [])
    todo = [(row, seed) for seed in args.seeds for row in names]
    with checkout(args.baseline, work, data_dir) if args.baseline else nullcontext() as tree:

        def run(row_seed):
            row, seed = row_seed
            _, flags, *env = rows[row]
            if row == args.baseline:
                return run_variant("enhance", data_dir, work, seed, cache_flags(tree), f"-{row}", threads, root=tree)
            return run_variant("enhance", data_dir, work, seed, flags, f"-{row}", threads, env=env[0] if env else None)

        runs = {}
        with ThreadPoolExecutor(args.jobs) as pool:
            for (row, _), result in zip(todo, pool.map(run, todo)):   # results in table order
                runs.setdefault(rows[row][0], []).extend(result)
                print(summarise(runs, val=True), flush=True)
    publish(runs, args.seeds, args.name, val=True)


if __name__ == "__main__":
    main()
