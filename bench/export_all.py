"""Export every variant to ONNX and int8 TFLite and print one parity table.

    python -m bench.export_all                       # the seed-42 models of bench/compare.py
    python -m bench.export_all --seeds 42 43 44      # every seed
    python -m bench.export_all --variants lstm_attention rnn_gru
    python -m bench.export_all --quantization dynamic-range   # the converter's own int8 scheme
    python -m bench.export_all --model-dirs model/baseline model/enhance

Runs export.py on each model directory as a user would (it checks parity on
that model's own Test split and writes export.json), then collects the
results: ONNX and TFLite max |p - p_keras|, TFLite top-1 agreement with Keras (and the
widest Keras top-2 margin among the clips it flipped), the accuracy of each
backend, file sizes, and whether every rule held. Output: a markdown table
to stdout and bench/results/export.json (export-dynamic-range.json for
that scheme).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import common  # noqa: E402
import export  # noqa: E402
from bench.compare import VARIANTS  # noqa: E402
from core.backends import FILES  # noqa: E402

COMPARE_MODELS = ROOT / "bench" / "results" / "compare" / "model"


def run_export(model_dir: Path, quantization: str) -> dict:
    """Run export.py on ``model_dir``; its exit status and the export.json it wrote."""
    cmd = [sys.executable, str(ROOT / "export.py"), "--model-dir", str(model_dir), "--quantization", quantization]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT)
    record = json.loads((model_dir / "export.json").read_text())
    return {"model_dir": str(model_dir), "exit_status": done.returncode, "parity": record["parity"],
            "bytes": {b: (model_dir / f).stat().st_size if (model_dir / f).exists() else None
                      for b, f in FILES.items()}}


def table(results: list[dict]) -> str:
    lines = ["| model | Keras acc | ONNX max abs diff | ONNX acc | TFLite max abs diff | TFLite top-1 agreement "
             "| flipped clips (widest Keras margin) | TFLite acc | MB keras / onnx / tflite | parity |", "|---" * 10 + "|"]
    for r in results:
        p, mb = r["parity"], r["bytes"]
        sizes = " / ".join("-" if mb[b] is None else f"{mb[b] / 1e6:.2f}" for b in FILES)
        lines.append(f"| {Path(r['model_dir']).name} | {p['keras']['accuracy']:.3f} | {p['onnx']['max_abs_diff']:.1e} "
                     f"| {p['onnx']['accuracy']:.3f} | {p['tflite']['max_abs_diff']:.1e} "
                     f"| {100 * p['tflite']['top1_agreement']:.1f}% "
                     f"| {p['tflite']['disagreements']} ({p['tflite']['widest_flipped_margin']:.3f}) "
                     f"| {p['tflite']['accuracy']:.3f} | {sizes} | {'ok' if p['passed'] else 'FAILED'} |")
    passed = sum(r["parity"]["passed"] for r in results)
    return "\n".join(lines) + f"\n\nParity held for {passed} of {len(results)} models."


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dirs", nargs="+", type=Path,
                   help="model directories (default: the --variants models bench/compare.py trained for --seeds)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help="with the default directories: these variants only, each one required "
                        "(default: every variant bench/compare.py has trained; the others are listed as not run)")
    p.add_argument("--seeds", nargs="+", type=int, default=[42], help="seeds of the compare models (default: 42)")
    p.add_argument("--quantization", choices=export.QUANTIZATIONS, default="weights", help="export.py's TFLite scheme")
    args = p.parse_args(argv)
    if not args.model_dirs:
        args.model_dirs = [COMPARE_MODELS / f"{v}-seed{s}" for s in args.seeds for v in args.variants or VARIANTS]
        if not args.variants:
            untrained = [d for d in args.model_dirs if not (d / FILES["keras"]).is_file()]
            if untrained:
                print(f"not trained by bench/compare.py, not exported: {', '.join(d.name for d in untrained)}")
            args.model_dirs = [d for d in args.model_dirs if d not in untrained]
    if not args.model_dirs:
        sys.exit(f"error: no model in {COMPARE_MODELS} (run bench/compare.py first)")
    missing = [str(d) for d in args.model_dirs if not (d / FILES["keras"]).is_file()]
    if missing:
        sys.exit(f"error: no trained model in {', '.join(missing)} (run bench/compare.py first)")
    results = [run_export(d, args.quantization) for d in args.model_dirs]
    out = table(results)
    print("\n" + out)
    name = "export" if args.quantization == "weights" else f"export-{args.quantization}"
    common.atomic_write(ROOT / "bench" / "results" / f"{name}.json",
                        json.dumps({"quantization": args.quantization, "results": results, "table": out}, indent=2))
    sys.exit(0 if all(r["exit_status"] == 0 for r in results) else 1)


if __name__ == "__main__":
    main()
