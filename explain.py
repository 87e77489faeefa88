"""Explain a classifier's decision on a recording: maps you can see, masks you can hear, metrics you can compare.

    python explain.py --model-dir model/enhance --file clip.wav [--methods saliency ig gradcam] [--out DIR]
    python explain.py --model-dir model/enhance --dir recordings/ [--out DIR]

The model's 500-frame window of the file (the first, or the one at --start) is explained
for the predicted class (or --target). Each method gives a map over the window's real
frames (core/saliency.py); each map becomes a binary mask (its top --top-percent % of
bins) and a soft mask (the map scaled to [0, 1]), which are applied to the file's
spectrogram and resynthesised with the original phase (core/listenable.py) so you can
hear what the model used. The masks are scored (core/attribution_metrics.py): AI, AD, AG,
FF, Fid-In, SPS, COMP and the deletion / insertion curves, next to a random mask.

Writes, per file: one PNG per method and overview.png, original.wav and
<method>_<mask>.wav, metrics.csv, curves.csv and curves.png, maps.npz, and report.html
(all of it in one self-contained page). --dir adds summary.csv (the metrics averaged over
the files), all_metrics.csv and summary.html. Explanations need gradients: after
`python export.py --model-dir M` a log-Mel model's directory holds them as ONNX graphs
(explain/, core/explain_graphs.py), which onnxruntime runs without TensorFlow (a process
starts in about a second instead of five); otherwise, and for attention maps, an MFCC
model or --gradcam-layer, the Keras model file is used (--backend keras forces it). A
model on MFCCs is explained over the same log-Mel window, its front end put in front of it
as a layer (core/saliency.py); a transfer model, whose input comes from a backbone outside
Keras, is refused.
"""
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import common
from core import attribution_metrics, explain_graphs, explain_report, listenable
from core.features import mel_filterbank
from core.maps import METHODS
from core.model_data import default_model_dir, examination_parser, keras_classifier


def parse_args(argv=None):
    p = examination_parser(__doc__.splitlines()[0], "explanations/<file or folder name>")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="the recording to explain")
    src.add_argument("--dir", type=Path, help="explain every recording under this folder; adds summary.csv")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=f"any of {' '.join(METHODS)} (default: every one the model supports)")
    p.add_argument("--start", type=float, default=0.0, help="start of the explained window, in seconds")
    p.add_argument("--target", default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--top-percent", type=float, default=attribution_metrics.DEFAULT_TOP_PERCENT,
                   help="binary masks keep this share of the window's bins")
    p.add_argument("--steps", type=int, default=20, help="points of the deletion / insertion curves")
    p.add_argument("--patch", type=int, nargs=2, default=(16, 16), metavar=("FRAMES", "MELS"),
                   help="LIME / SHAP patch size (16 frames = 0.5 s)")
    p.add_argument("--lime-samples", type=int, default=1000, help="perturbed inputs LIME fits its surrogate to")
    p.add_argument("--shap-samples", type=int, default=1000, help="coalitions Kernel SHAP evaluates")
    p.add_argument("--gradcam-layer", default=None, help="Grad-CAM layer name (default: the last convolution)")
    p.add_argument("--seed", type=int, default=0, help="SmoothGrad noise, LIME, SHAP and the random mask")
    p.add_argument("--backend", choices=("auto", "onnx", "keras"), default="auto",
                   help="what computes the gradients: the explanation graphs export.py writes (onnx, no "
                        "TensorFlow), or the Keras model; auto: onnx where the graphs serve every method asked for")
    return p.parse_args(argv)


def choose_methods(explainer, requested) -> list[str]:
    """The requested methods (all of them must apply), or every default method that applies to the model."""
    if requested is None:
        return [m for m in METHODS if explainer.available(m) is None]
    for m in requested:
        reason = explainer.available(m)
        if reason:
            sys.exit(f"error: {m}: {reason}")
    return list(dict.fromkeys(requested))


def load_window(path: Path, cfg, start: float) -> np.ndarray:
    """The audio of the model's window of ``path`` that begins ``start`` seconds in."""
    y = common.load_audio(path, cfg.sr, start + cfg.window_seconds)
    y = y[round(start * cfg.sr):]
    if len(y) < cfg.n_fft:
        raise common.AudioError(path, f"no audio after --start {start:g} s")
    return y


def explain_window(explainer, x: np.ndarray, c: int, methods, args):
    """Maps, metrics and curves of every method for class ``c`` on window ``x``.

    Returns (maps: name -> (n_real, mels) map, including "random"; metrics: one row per
    method and mask type; curves: deletion and insertion points; seconds: name -> time).
    """
    x_real = x[:common.n_real_frames(x)]
    maps, seconds = {}, {}
    for method in tqdm(methods, desc="methods", unit="method", leave=False, disable=None):
        start = time.perf_counter()
        maps[method] = explainer.explain(method, x, c)
        seconds[method] = time.perf_counter() - start
    maps["random"] = np.random.default_rng(args.seed).random(x_real.shape).astype(np.float32)
    rows, curves = [], []
    for method, saliency in maps.items():
        aucs = {}
        for kind, curve in (("deletion", attribution_metrics.deletion_curve),
                            ("insertion", attribution_metrics.insertion_curve)):
            fractions, probs = curve(explainer.predict, x_real, saliency, c, args.steps)
            aucs[f"{kind}_auc"] = attribution_metrics.curve_auc(fractions, probs)
            curves += [{"method": method, "curve": kind, "fraction": f, "probability": p}
                       for f, p in zip(fractions, probs)]
        table = attribution_metrics.metrics_table(explainer.predict, x_real, saliency, classes=c,
                                                  top_percent=args.top_percent, steps=None)
        rows += [{"method": method, "mask": mask, **values, **aucs, "seconds": seconds.get(method, 0.0)}
                 for mask, values in table.items()]
    return maps, pd.DataFrame(rows), pd.DataFrame(curves), seconds


def masks_of(saliency: np.ndarray, top_percent: float) -> dict:
    return {"binary": attribution_metrics.binary_mask(saliency, top_percent),
            "soft": attribution_metrics.soft_mask(saliency)}


def wav_bytes(path: Path, y: np.ndarray, sr: int) -> bytes:
    return listenable.write_wav_atomic(path, y, sr).read_bytes()


def explainer_for(clf, args, db: np.ndarray):
    """The :class:`core.saliency.Explainer` of ``clf``'s model over the window whose log-Mel map is ``db``.

    A log-Mel model's serves every window (``db`` is not read); an MFCC model's is built per
    window, since its front end layer carries the window's level and length.
    """
    from core.saliency import Explainer, mfcc_front
    front = None
    if clf.front_end.kind == "mfcc":
        front = mfcc_front(db, clf.cfg, clf.front_end.params)
    return Explainer(clf.predictor.model, args.patch, args.lime_samples, args.shap_samples, args.seed,
                     args.gradcam_layer, front)


def explain_file(explainer, clf, path: Path, methods, args, out: Path) -> pd.DataFrame:
    """Explain one recording into ``out`` (with ``explainer``, or one built for it); returns its metrics rows."""
    cfg = clf.cfg
    y = load_window(path, cfg, args.start)
    db = common.log_mel(y[:cfg.window_samples], cfg)   # once, for the explained input, MFCC front and model features
    x = common.normalize_frames(db, cfg.n_frames)        # common.clip_features(y, cfg), from db
    x_real = x[:common.n_real_frames(x)]
    explainer = explainer or explainer_for(clf, args, db)
    probs = clf.predict_features(clf.front_end.of_log_mel(db)[None])[0]
    c = clf.classes.index(args.target) if args.target else int(probs.argmax())
    maps, metrics, curves, _ = explain_window(explainer, x, c, methods, args)
    metrics.insert(0, "file", str(path))

    hop = cfg.hop_length / cfg.sr
    label = f"{clf.classes[c]} (p = {probs[c]:.3f})"
    figures = [("log-Mel window", explain_report.overlay_png(x_real, None, hop, args.start, "log-Mel window"))]
    figures += [(m, explain_report.overlay_png(x_real, s, hop, args.start, f"{m}: {label}")) for m, s in maps.items()]
    for name, png in figures[1:]:
        common.atomic_write(out / f"{name}.png", png)
    common.atomic_write(out / "overview.png", explain_report.overview_png(
        x_real, {m: s for m, s in maps.items() if m != "random"}, hop, args.start, f"{path.name}: {label}"))
    curves_png = explain_report.curves_png(curves, f"{path.name}: {label}")
    common.atomic_write(out / "curves.png", curves_png)

    filterbank = mel_filterbank(cfg.sr, cfg.n_fft, cfg.n_mels)
    sounds = [("original", [("window", wav_bytes(out / "original.wav", y, cfg.sr))])]
    for method, saliency in maps.items():
        sounds.append((method, [
            (f"{mask} mask", wav_bytes(out / f"{method}_{mask}.wav", listenable.reconstruct(
                y, m, cfg.sr, cfg.n_fft, cfg.hop_length, filterbank), cfg.sr))
            for mask, m in masks_of(saliency, args.top_percent).items()]))

    npz = io.BytesIO()
    np.savez_compressed(npz, **maps)
    common.atomic_write(out / "maps.npz", npz.getvalue())
    common.atomic_write(out / "metrics.csv", metrics.to_csv(index=False))
    common.atomic_write(out / "curves.csv", curves.to_csv(index=False))
    top3 = ", ".join(f"{clf.classes[i]} {probs[i]:.3f}" for i in np.argsort(-probs)[:3])
    facts = [f"file: {path}",
             f"window: {args.start:g}-{args.start + len(x_real) * hop:.2f} s ({len(x_real)} frames of sound)",
             f"model: {clf.model_dir} ({clf.config.get('variant', '?')})",
             f"top classes: {top3}", f"explained class: {label}"]
    notes = [(f"binary mask: the top {args.top_percent:g} % of the window's bins by the map; soft mask: the map "
              "with negatives clipped, scaled to [0, 1]; random: a uniformly random map"),
             ("AI, AG, Fid-In, FF, insertion AUC: higher is better; AD, deletion AUC, COMP: lower is better; "
              "SPS: higher is sparser"),
             "masked-out bins are set to 0, the clip's mean level (the value of padding)"]
    page = explain_report.render_page(f"Why '{clf.classes[c]}'? {path.name}", facts,
                                      figures + [("deletion and insertion curves", curves_png)], sounds,
                                      metrics.drop(columns=["file", "n"]), notes)
    common.atomic_write(out / "report.html", page)
    return metrics


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean of every metric per method and mask type over the files, with the number of files."""
    values = metrics.drop(columns=["file", "n"])
    summary = values.groupby(["method", "mask"], sort=False).mean().reset_index()
    summary["files"] = metrics.groupby(["method", "mask"], sort=False).size().values
    return summary


def graph_explainer(args):
    """(classifier, explainer) on onnxruntime when ``args`` allow it and the model directory's graphs serve the
    methods asked for; None otherwise (``--backend onnx`` then stops with the reason)."""
    model_dir = args.model_dir or default_model_dir()
    reason = None
    if args.backend == "keras" or (args.backend == "auto" and not model_dir.is_dir()):
        return None   # the Keras classifier's own one-line error names a missing directory
    if not explain_graphs.has_graphs(model_dir):
        reason = (f"{model_dir} has no explanation graphs (python export.py --model-dir {model_dir} writes them "
                  f"for a log-Mel model)")
    elif not (model_dir / common.ONNX_FILE).is_file():
        reason = f"{model_dir} has no {common.ONNX_FILE} (run: python export.py --model-dir {model_dir})"
    elif args.gradcam_layer is not None:
        reason = "--gradcam-layer needs the Keras model (the graphs hold the last convolution's)"
    else:
        explainer = explain_graphs.GraphExplainer(model_dir, args.patch, args.lime_samples, args.shap_samples,
                                                  args.seed)
        # by default every method the model allows, so a model with attention keeps its attention map
        wanted = args.methods or explainer.record["methods"] + explainer.record["keras_only"]
        missing = [m for m in wanted if explainer.available(m)]
        if missing:
            reason = explainer.available(missing[0])
        else:
            return common.Classifier(model_dir, backend="onnx"), explainer
    if args.backend == "onnx":
        sys.exit(f"error: --backend onnx: {reason}")
    print(f"note: explaining with TensorFlow: {reason}", file=sys.stderr)
    return None


def main(argv=None):
    args = parse_args(argv)
    try:
        on_graphs = graph_explainer(args)
        # the Keras model imports TensorFlow (~5 s): not before --help or a bad flag
        clf = on_graphs[0] if on_graphs else keras_classifier(args.model_dir)
    except common.ModelDirError as e:
        sys.exit(f"error: {e}")
    if clf.front_end.kind not in ("log_mel", "mfcc"):
        sys.exit(f"error: {clf.model_dir}: its input is {clf.front_end.input_name} from a pretrained backbone run "
                 f"outside Keras, so no gradient or mask reaches the log-Mel window; explain.py explains log-Mel "
                 f"and MFCC models")
    if args.target is not None and args.target not in clf.classes:
        sys.exit(f"error: --target {args.target}: not a class of {clf.model_dir} ({', '.join(clf.classes)})")
    if on_graphs:
        explainer = on_graphs[1]
        methods = choose_methods(explainer, args.methods)
    else:   # which methods apply depends on the model alone; an MFCC model's front needs some window
        probe = explainer_for(clf, args, common.log_mel(np.full(clf.cfg.window_samples, 1e-3, np.float32), clf.cfg))
        methods = choose_methods(probe, args.methods)
        explainer = probe if clf.front_end.kind == "log_mel" else None
    source = args.file or args.dir
    out = args.out or clf.model_dir / "explanations" / source.stem
    if args.file:
        try:
            metrics = explain_file(explainer, clf, args.file, methods, args, out)
        except common.AudioError as e:
            sys.exit(f"error: {e}")
        print(metrics.drop(columns=["file", "n"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {out}/report.html and the maps, recordings and tables beside it")
        return
    if not args.dir.is_dir():
        sys.exit(f"error: {args.dir}: not a folder")
    files = sorted(p for p in args.dir.rglob("*") if p.is_file() and common.is_audio_file(p))
    parts, skipped = [], 0
    for path in tqdm(files, desc="files", unit="file", disable=None):
        try:
            parts.append(explain_file(explainer, clf, path, methods, args,
                                      out / "__".join(path.relative_to(args.dir).with_suffix("").parts)))
        except common.AudioError as e:
            common.warn(f"skipping {e}")
            skipped += 1
    if not parts:
        sys.exit(f"error: {args.dir}: no readable recording ({skipped} skipped)")
    metrics = pd.concat(parts, ignore_index=True)
    summary = summarise(metrics)
    common.atomic_write(out / "all_metrics.csv", metrics.to_csv(index=False))
    common.atomic_write(out / "summary.csv", summary.to_csv(index=False))
    common.atomic_write(out / "summary.html", explain_report.render_page(
        f"Explanations of {clf.model_dir} on {args.dir}", [f"{len(parts)} recordings, {skipped} skipped",
                                                       f"one page per recording: {out}/<name>/report.html"],
        [], [], summary, ["metrics averaged over the recordings"]))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/summary.csv, summary.html and one folder per recording ({skipped} skipped)")


if __name__ == "__main__":
    main()
