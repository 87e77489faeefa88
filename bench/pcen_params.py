"""Which PCEN parameters, by a cheap proxy on validation: pooled maps, a linear model, wind left out in turn.

    python -m bench.pcen_params

Training a network per setting would take hours, so each Mel map (dB, and PCEN
over a grid of time constant, gain, bias and power) is pooled over time (mean,
max and std of each band, after the per-clip z-normalisation the models see)
and a class-balanced logistic regression is fitted on the Training clips,
clean and mixed with wind at 5-25 dB. It is scored on the validation clips,
clean and at 0 dB of wind recordings it never heard: the training wind
recordings of ``--noise-source`` are left out in pairs (in name order),
one pair a fold; the recordings ``bench.wind_robustness`` holds out of
training (``--held-out``) are not used at all. On bench/compare.py's split;
Test is not read. Prints a table of validation macro-F1, best first by the
mean of clean and 0 dB, and writes bench/results/pcen_params.json.
"""
import argparse
import itertools
import json

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

import common
from bench.compare import ROOT, add_data_flags, prepare_split
from bench.wind_robustness import HELD_OUT
from core.features import centred_frames, mel_power, scale_mel

GRID = {"time_constant": (0.06, 0.2, 0.4), "gain": (0.8, 0.98), "bias": (2.0, 10.0), "power": (0.25, 0.5)}


def mel_powers(audio: list, cfg, noise: list | None = None, snr_db: float | None = None, seed: int = 0) -> list:
    """The Mel power of each clip's window, mixed first with one of ``noise`` (at ``snr_db``, or 5-25 dB) if given."""
    out = []
    for i, y in enumerate(audio):
        rng = np.random.default_rng([seed, i])
        if noise:
            y = common.mix_at_snr(y, noise[int(rng.integers(len(noise)))],
                                  float(rng.uniform(5, 25)) if snr_db is None else snr_db, rng)
        out.append(mel_power(centred_frames(y[:cfg.window_samples], cfg), cfg))
    return out


def pooled(powers: list, cfg) -> np.ndarray:
    """(clips, 3 * n_mels): mean, max and std over time of each band of each clip's z-normalised map."""
    rows = []
    for power in powers:
        z = common.normalize_frames(scale_mel(power, cfg), len(power))
        rows.append(np.concatenate([z.mean(0), z.max(0), z.std(0)]))
    return np.stack(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(p)
    p.add_argument("--held-out", nargs="+", default=list(HELD_OUT), help="wind recordings this bench never uses")
    args = p.parse_args(argv)
    base = common.FeatureConfig()
    data = common.load_splits(prepare_split(args), base, 42, with_audio=True)
    names = sorted(f.name for f in args.noise_source.glob("*.wav") if f.name not in args.held_out)
    wind = {name: common.load_audio(args.noise_source / name, base.sr, 120) for name in names}
    configs = {"db": base} | {
        f"pcen T={t:g} gain={g:g} bias={b:g} power={r:g}": common.FeatureConfig(
            scaling="pcen", pcen_time_constant=t, pcen_gain=g, pcen_bias=b, pcen_power=r)
        for t, g, b, r in itertools.product(*GRID.values())}
    scores = {name: [] for name in configs}
    folds = [names[i:i + 2] for i in range(0, len(names), 2)]
    for fold, left_out in enumerate(folds):
        heard = [wind[n] for n in names if n not in left_out]
        unheard = [wind[n] for n in left_out]
        train = mel_powers(data.train.audio, base) + mel_powers(data.train.audio, base, heard, seed=1)
        val_clean, val_wind = mel_powers(data.val.audio, base), mel_powers(data.val.audio, base, unheard, 0.0, seed=2)
        y = np.concatenate([data.train.y, data.train.y])
        for name, cfg in configs.items():
            x = pooled(train, cfg)
            scaler = StandardScaler().fit(x)
            model = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(scaler.transform(x), y)
            scores[name].append([f1_score(data.val.y, model.predict(scaler.transform(pooled(v, cfg))), average="macro")
                                 for v in (val_clean, val_wind)])
        print(f"fold {fold + 1}/{len(folds)} (left out: {', '.join(left_out)}) done", flush=True)
    rows = sorted(((name, *np.mean(s, axis=0)) for name, s in scores.items()), key=lambda r: -(r[1] + r[2]))
    table = ["| map | validation macro-F1, clean | at 0 dB of unheard wind |", "|---|---:|---:|"]
    table += [f"| {name} | {clean:.3f} | {windy:.3f} |" for name, clean, windy in rows]
    print("\n".join(table))
    out = ROOT / "bench" / "results" / "pcen_params.json"
    common.atomic_write(out, json.dumps({"folds": folds, "scores": scores, "table": "\n".join(table)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
