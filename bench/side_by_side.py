"""Time one command at an earlier commit against this checkout, taking turns.

    python -m bench.side_by_side --baseline COMMIT [--runs 3] [--warmup 1] -- SCRIPT.py [ARGS ...]

SCRIPT.py runs from a git worktree of COMMIT and from this checkout in turn, with the same
ARGS, --runs times each after --warmup untimed runs each (a feature cache keyed by the code
fills on a tree's first run). Both run in this checkout's folder, so relative paths in ARGS
mean the same files; each imports the toolkit of its own tree (Python puts a script's
folder first on its path). Prints the median wall time of each and the ratio, and writes
bench/results/side_by_side-<SCRIPT>.json. The machine should be otherwise idle.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.compare import ROOT, worktree


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", required=True, metavar="COMMIT", help="the commit to compare this checkout with")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each tree")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each tree first")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT.py [ARGS ...]")
    args = p.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command or not (ROOT / args.command[0]).is_file():
        p.error(f"name a script of this checkout after --, e.g. -- explain.py --file clip.wav (got {args.command})")
    return args


def seconds(script: Path, args: list) -> float:
    """Wall time of ``python script args`` run in this checkout's folder; stops the bench if the command fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {script} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    script, rest = args.command[0], args.command[1:]
    with tempfile.TemporaryDirectory() as tmp, worktree(args.baseline, Path(tmp) / "tree") as old:
        trees = {args.baseline: old / script, "this checkout": ROOT / script}
        for path in tqdm([p for p in trees.values() for _ in range(args.warmup)], desc="warm-up", unit="run"):
            seconds(path, rest)
        times = {name: [] for name in trees}
        for _ in tqdm(range(args.runs), desc=f"{args.baseline} against this checkout", unit="round"):
            for name, path in trees.items():
                times[name].append(seconds(path, rest))
    before, after = (float(np.median(times[name])) for name in trees)
    print(f"\n`python {' '.join(args.command)}`, median of {args.runs} runs each, taking turns:\n")
    print(f"| {args.baseline} | this checkout | ratio |\n|---:|---:|---:|\n| {before:.1f} s | {after:.1f} s | "
          f"{after / before:.2f} |")
    out = ROOT / "bench" / "results" / f"side_by_side-{Path(script).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"baseline": args.baseline, "command": args.command, "seconds": times}, indent=2))


if __name__ == "__main__":
    main()
