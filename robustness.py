"""Where the classifier breaks: Test accuracy and macro-F1 under noise, feature noise and adversarial attacks.

    python robustness.py --model-dir model/enhance [--wind-dir DIR] [--noise-dir DIR ...] [--out DIR]

Curves against SNR (30 to -5 dB, measured on each call's active part, the way enhance.py
mixes wind) for white noise, for wind, and for every --noise-dir; Gaussian noise added to
the model's input features; FGSM and PGD (L-inf on that input, a grid of eps) and DeepFool
(L2: the distribution of the smallest perturbation that flips each correct clip). Feature
perturbations touch only the window's real frames (core/robustness.py says why) and are in
units of one feature standard deviation: the z-normalised log-Mel's own unit, and each
feature's spread over the Test clips for MFCCs and backbone embeddings.

Wind must be held out to measure robustness rather than memory. The wind recordings are
taken from --wind-dir (default: <data-dir>/heldout/wind if it exists, else
<data-dir>/Noise/wind), and every one whose bytes match a recording under the model's
training data's Noise/ folder (which wind mixing and outlier exposure read) is left out.
If none is left, all are used and the output says "seen in training".

Writes robustness.csv (kind, level, unit, accuracy, macro_f1, n, noise), deepfool.csv (one
row per clip), noise_<kind>.png for each noise, snr_curves.png, adversarial_sensitivity.png
and deepfool.png into --out (default MODEL_DIR/robustness).
"""
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import common
from core import robustness
from core.compile_cache import use_compile_cache
from core.model_data import (
    default_data_dir,
    examination_parser,
    feature_scale,
    keras_classifier,
    split_clips,
    training_data_dir,
)


def parse_args(argv=None):
    p = examination_parser(__doc__.splitlines()[0], "robustness")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="dataset with Test/<class>/ (default: the one the model was trained on)")
    p.add_argument("--wind-dir", type=Path, default=None, help="wind recordings (see above for the default)")
    p.add_argument("--noise-dir", type=Path, action="append", default=[],
                   help="another folder of noise recordings to mix in (repeatable)")
    p.add_argument("--snrs", type=float, nargs="+", default=[30, 20, 10, 5, 0, -5], help="SNRs in dB")
    p.add_argument("--sigmas", type=float, nargs="*", default=[0.1, 0.25, 0.5, 1.0, 2.0],
                   help="Gaussian feature noise, in feature std units (none: skip)")
    p.add_argument("--eps", type=float, nargs="*", default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
                   help="FGSM / PGD L-inf radii, in feature std units (none: skip)")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--deepfool-iterations", type=int, default=50, help="0: skip DeepFool")
    p.add_argument("--limit", type=int, default=None, help="use only the first N Test clips (quick looks)")
    p.add_argument("--batch-size", type=int, default=32, help="clips per attack batch")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE,
                   help="feature cache, and the attacks' compiled XLA programs (under xla/)")
    p.add_argument("--seed", type=int, default=0, help="noise excerpts, feature noise, PGD starts")
    return p.parse_args(argv)


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and common.is_audio_file(p)) if folder.is_dir() else []


def held_out_wind(wind_dir: Path, training_data: Path) -> tuple[list[Path], bool]:
    """(recordings to mix, whether they are held out): those of ``wind_dir`` unlike any under ``training_data``/Noise."""
    files = audio_files(wind_dir)
    if not files:
        sys.exit(f"error: {wind_dir}: no wind recordings (pass --wind-dir)")
    seen = {common.file_hash(p) for p in audio_files(training_data / "Noise")}
    unseen = [p for p in files if common.file_hash(p) not in seen]
    if not (training_data / "Noise").is_dir():
        common.warn(f"{training_data}/Noise not found: cannot tell which wind recordings the model trained with")
    elif not unseen:
        common.warn(f"all {len(files)} wind recordings in {wind_dir} are also under {training_data}/Noise, which "
                    f"training reads: the wind curve measures noise the model has heard (see --wind-dir)")
    return (unseen, True) if unseen else (files, False)


def noise_bank(files: list[Path], sr: int) -> list[np.ndarray]:
    bank = []
    for p in files:
        try:
            bank.append(common.load_audio(p, sr, max_seconds=120.0))
        except common.AudioError as e:
            common.warn(f"skipping noise file {e}")
    if not bank:
        sys.exit(f"error: none of {', '.join(p.name for p in files)} is readable audio")
    return bank


def scores(clf, x: np.ndarray, y: np.ndarray) -> dict:
    metrics, _, _ = common.evaluate(clf.predict_features(x), y, clf.classes)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n_test"]}


def deepfool_table(clf, logits, clips, args) -> pd.DataFrame:
    """DeepFool on every correctly classified clip: its minimal perturbation's L2 (absolute and relative) and L-inf."""
    correct = np.flatnonzero(clf.predict_features(clips.x).argmax(axis=1) == clips.y) if args.deepfool_iterations else []
    parts = []
    for start in tqdm(range(0, len(correct), args.batch_size), desc="DeepFool", unit="batch", disable=None):
        idx = correct[start:start + args.batch_size]
        r, iterations, flipped = robustness.deepfool(logits, clips.x[idx], args.deepfool_iterations)
        l2 = np.sqrt(np.sum(r ** 2, axis=(1, 2)))
        parts.append(pd.DataFrame({
            "file": [str(clips.files[i]) for i in idx], "label": [clf.classes[clips.y[i]] for i in idx],
            "l2": l2, "rho": l2 / np.sqrt(np.sum(clips.x[idx] ** 2, axis=(1, 2))), "linf": np.abs(r).max(axis=(1, 2)),
            "iterations": iterations, "flipped": flipped}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["file", "label", "l2", "rho",
                                                                                   "linf", "iterations", "flipped"])


def main(argv=None):
    args = parse_args(argv)
    use_compile_cache(args.cache_dir)   # the attacks' XLA programs, kept for the next run on this model
    from core.saliency import (
        logits_model,  # imports TensorFlow (~10 s): not before --help or a bad flag
    )
    try:
        clf = keras_classifier(args.model_dir)
        data_dir = args.data_dir or default_data_dir(clf.config)
        clips = split_clips(data_dir, "Test", clf.classes, clf.front_end, args.cache_dir, with_audio=True,
                            limit=args.limit)
    except (common.ModelDirError, common.DatasetError) as e:
        sys.exit(f"error: {e}")
    training_data = training_data_dir(clf.config)
    heldout = data_dir / "heldout" / "wind"
    wind_dir = args.wind_dir or (heldout if heldout.is_dir() else data_dir / "Noise" / "wind")
    out = args.out or clf.model_dir / "robustness"
    wind_files, held_out = held_out_wind(wind_dir, training_data)
    noises = [("white", robustness.white_noise(args.seed), "Gaussian white noise"),
              ("wind", robustness.recording_noise(noise_bank(wind_files, clf.cfg.sr), args.seed),
               " ".join(p.name for p in wind_files) + (" (held out)" if held_out else " (seen in training)"))]
    for folder in args.noise_dir:
        noises.append((folder.name, robustness.recording_noise(noise_bank(audio_files(folder), clf.cfg.sr),
                                                                 args.seed), str(folder)))

    rows = [{"kind": "clean", "level": np.inf, "unit": "dB SNR", **scores(clf, clips.x, clips.y), "noise": ""}]
    for kind, noise_for, description in noises:
        for snr in tqdm(args.snrs, desc=f"{kind} noise", unit="SNR", disable=None):
            x = robustness.mixed_features(clips.audio, noise_for, snr, clf.front_end.features, args.seed)
            rows.append({"kind": kind, "level": snr, "unit": "dB SNR", **scores(clf, x, clips.y), "noise": description})
    scale = feature_scale(clf.front_end, clips.x)
    for sigma in args.sigmas:
        x = robustness.feature_noise(clips.x, sigma, args.seed, scale)
        rows.append({"kind": "feature_gaussian", "level": sigma, "unit": "feature std", **scores(clf, x, clips.y),
                     "noise": ""})

    logits = logits_model(clf.predictor.model)
    attacks = {"fgsm": lambda x, y, eps: robustness.fgsm(logits, x, y, eps, scale),
               "pgd": lambda x, y, eps: robustness.pgd(logits, x, y, eps, args.pgd_steps, args.seed, scale)}
    for kind, attack in attacks.items():
        for eps in tqdm(args.eps, desc=kind.upper(), unit="eps", disable=None):
            x = robustness.in_batches(partial(attack, eps=eps), args.batch_size, clips.x, clips.y)
            rows.append({"kind": kind, "level": eps, "unit": "feature std (L-inf)", **scores(clf, x, clips.y),
                         "noise": ""})
    table = pd.DataFrame(rows)

    fooled = deepfool_table(clf, logits, clips, args)
    name = f"{clf.model_dir.name} on {len(clips.y)} Test clips"
    common.atomic_write(out / "robustness.csv", table.to_csv(index=False))
    common.atomic_write(out / "deepfool.csv", fooled.to_csv(index=False))
    for kind, _, description in noises:
        robustness.plot_snr_curves(table[table.kind.isin(["clean", kind])], f"{name}: {kind} ({description})",
                                   out / f"noise_{kind}.png")
    robustness.plot_snr_curves(table, f"{name}: every noise", out / "snr_curves.png")
    if args.eps or args.sigmas:
        robustness.plot_adversarial(table, f"{name}: adversarial and feature noise", out / "adversarial_sensitivity.png")
    if len(fooled):
        robustness.plot_deepfool(fooled.rho[fooled.flipped].to_numpy(), f"{name}: DeepFool", out / "deepfool.png")

    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", columns=list(table.columns[:-1])))
    clean = table.accuracy[0]
    wind0 = table[(table.kind == "wind") & (table.level == 0)].accuracy
    if len(wind0):
        print(f"wind at 0 dB ({noises[1][2]}): accuracy {wind0.item():.3f}, clean {clean:.3f} "
              f"({100 * (wind0.item() - clean):+.1f} points)")
    if fooled.flipped.any():
        rho = fooled.rho[fooled.flipped]
        print(f"DeepFool: {int(fooled.flipped.sum())} of {len(fooled)} correct clips flipped; ||r||/||x|| median "
              f"{rho.median():.4f} (quartiles {rho.quantile(0.25):.4f}-{rho.quantile(0.75):.4f})")
    print(f"wrote {out}/robustness.csv, deepfool.csv and the curves")


if __name__ == "__main__":
    main()
