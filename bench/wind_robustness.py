"""How loud a wind the main model withstands, by recipe: held-out wind recordings mixed into Test.

    python -m bench.wind_robustness                            # seed 42, every row below
    python -m bench.wind_robustness --rows shipped synthetic-wind --seeds 42 43 44

On bench/compare.py's split: two wind recordings (``--held-out``, from
sources none of the others come from) are moved out of ``Noise/wind`` into
``heldout/wind``, so neither the wind mixing nor the outlier exposure of
training hears them. Each row trains ``enhance.py`` with some flags, then
``robustness.py`` mixes the held-out wind into every Test clip at each SNR
(measured on the call's active part). Validation macro-F1 (clean) says what
a recipe costs; the wind columns are Test figures, reported, never used to
choose. Output: a markdown table to stdout and bench/results/<--name>.json.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import common
from bench.compare import ROOT, add_data_flags, prepare_split, trained

HELD_OUT = ("kakapo_leaves.wav", "openclonk_windloop.wav")
SNRS = (10, 5, 0, -5)
# enhance.py's wind settings until 2026-12-05, which the earlier rows changed one at a time
EARLIER = ["--synthetic-wind", "0", "--synthetic-wind-corner", "50", "2000", "--snr-min", "5", "--p-noise", "0.5"]
DB = ["--scaling", "db", *EARLIER]   # the recipe before PCEN
PCEN = ["--scaling", "pcen", *EARLIER]
BROADBAND = ["--synthetic-wind", "16", "--synthetic-wind-corner", "50", "8000"]
WINDY = [*BROADBAND, "--snr-min", "0", "--p-noise", "0.75"]   # the windy-site option (README: wind by recipe)
ROWS = {   # short name: (what changes, enhance.py flags)
    "shipped": ("the shipped recipe", []),
    "db": ("the dB map (wind at 5-25 dB), the shipped recipe before PCEN", DB),
    "snr-5": ("dB, wind at -5 to 25 dB", [*DB, "--snr-min", "-5"]),
    "synthetic-wind": ("dB, + 16 synthetic winds of random colour", [*DB, "--synthetic-wind", "16"]),
    "synthetic-wind-snr-5": ("dB, + 16 synthetic winds, at -5 to 25 dB",
                             [*DB, "--synthetic-wind", "16", "--snr-min", "-5"]),
    "synthetic-wind-broadband": ("dB, + 16 synthetic winds, corners up to 8 kHz", [*DB, *BROADBAND]),
    "pcen": ("PCEN instead of dB (wind at 5-25 dB)", PCEN),
    "pcen-synthetic-wind-broadband": ("PCEN, + 16 synthetic winds, corners up to 8 kHz", [*PCEN, *BROADBAND]),
    "pcen-synthetic-wind-broadband-snr-0": ("PCEN, + 16 synthetic winds to 8 kHz, wind at 0-25 dB",
                                            [*PCEN, *BROADBAND, "--snr-min", "0"]),
    "pcen-synthetic-wind-broadband-snr-5": ("PCEN, + 16 synthetic winds to 8 kHz, wind at -5-25 dB",
                                            [*PCEN, *BROADBAND, "--snr-min", "-5"]),
    "pcen-synthetic-wind-broadband-snr-0-p75": ("PCEN, + 16 synthetic winds to 8 kHz, wind at 0-25 dB in 75 % of clips",
                                                [*PCEN, *WINDY]),
    "pcen-synthetic-wind-broadband-snr-5-p75": ("PCEN, + 16 synthetic winds to 8 kHz, wind at -5-25 dB in 75 % of "
                                                "clips", [*PCEN, *BROADBAND, "--snr-min", "-5", "--p-noise", "0.75"]),
}


def with_wind_held_out(data_dir: Path, held_out: tuple, target: Path) -> Path:
    """A data folder of links to ``data_dir`` whose ``held_out`` wind recordings sit in heldout/wind, not Noise/."""
    for split in ("Training", "Test"):
        if not (target / split).exists():
            target.mkdir(parents=True, exist_ok=True)
            (target / split).symlink_to((data_dir / split).resolve(), target_is_directory=True)
    for side in ("Noise", "heldout"):   # laid out afresh: an earlier run may have held out other recordings
        shutil.rmtree(target / side, ignore_errors=True)
    for recording in sorted((data_dir / "Noise" / "wind").iterdir()):
        link = target / ("heldout" if recording.name in held_out else "Noise") / "wind" / recording.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(recording.resolve())
    missing = set(held_out) - {p.name for p in (target / "heldout" / "wind").glob("*")}
    if missing:
        raise SystemExit(f"error: {data_dir / 'Noise' / 'wind'}: no recording named {', '.join(sorted(missing))}")
    return target


def wind_curve(model_dir: Path, wind_dir: Path) -> dict:
    """Test accuracy, clean and at each of :data:`SNRS` of ``wind_dir``'s recordings, by robustness.py."""
    subprocess.run([sys.executable, str(ROOT / "robustness.py"), "--model-dir", str(model_dir), "--wind-dir",
                    str(wind_dir), "--snrs", *map(str, SNRS), "--sigmas", "--eps", "--deepfool-iterations", "0"],
                   check=True, cwd=ROOT)
    table = pd.read_csv(model_dir / "robustness" / "robustness.csv")
    wind = table[table["kind"] == "wind"].set_index("level")["accuracy"]
    return {"clean": float(table.loc[table["kind"] == "clean", "accuracy"].iloc[0]),
            **{f"wind {snr} dB": float(wind[float(snr)]) for snr in SNRS}}


def summarise(runs: dict) -> str:
    columns = ["val macro-F1", "clean", *(f"wind {snr} dB" for snr in SNRS), "gap at 0 dB (points)"]
    lines = ["| recipe | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for name, rows in runs.items():
        cells = [np.mean([r[c] for r in rows]) for c in columns[:-1]]
        gap = 100 * np.mean([r["wind 0 dB"] - r["clean"] for r in rows])
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {gap:+.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p)
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="which rows to run")
    p.add_argument("--held-out", nargs="+", default=list(HELD_OUT), help="wind recordings kept out of training")
    p.add_argument("--name", default="wind_robustness", help="results file: bench/results/<name>.json")
    p.add_argument("--reuse", action="store_true", help="measure the models an earlier run finished instead of "
                                                        "training them again")
    args = p.parse_args(argv)
    data_dir = with_wind_held_out(prepare_split(args), tuple(args.held_out), args.work / "wind_held_out")
    runs = {}
    for seed in args.seeds:
        for row in args.rows:
            model_dir = trained("enhance", data_dir, args.work / "wind", seed, ROWS[row][1], f"-{row}", args.reuse)
            val = json.loads((model_dir / "metrics.json").read_text())["val_macro_f1"]
            runs.setdefault(ROWS[row][0], []).append(
                {"seed": seed, "val macro-F1": val, **wind_curve(model_dir, data_dir / "heldout" / "wind")})
            print(summarise(runs), flush=True)
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    common.atomic_write(out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "table": summarise(runs)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
