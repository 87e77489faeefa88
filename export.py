"""Export a trained model to ONNX and int8 TFLite, and check both against Keras on the Test split.

    python export.py --model-dir model/baseline [--data-dir Animals_Sounds]

Writes next to the model's animal_sound_model.keras:

    model.onnx          float32, any batch size (tf2onnx, through Keras' model.export)
    model_int8.tflite   int8 weights, batch size 1 (runs in ai_edge_litert); with
                        --quantization weights (default) the arithmetic stays float32,
                        with dynamic-range the activations are rounded to int8 too
    explain/            a log-Mel model's explanation graphs (core/explain_graphs.py): explain.py's
                        gradient methods, LIME and SHAP without TensorFlow, checked against Keras'
                        maps on three Test windows (2 %, L2); skipped (one line) where tf2onnx cannot
                        convert the backward pass, e.g. of a recurrent model
    export.json         what was exported, with which versions, and the parity results

Both map a batch of the model's front-end features (float32) to its logits
and embedding: log-Mel (batch, frames, mels), or for a transfer model
(transfer.py) the backbone's chunk embeddings (batch, chunks, dim). A
transfer model's exported files are its head alone: every backend embeds
with the same frozen backbone (BirdNET's own TFLite file, which config.json
names), so parity is measured on the head.

The graphs are traced with training=False, so dropout, noise and random
augmentation layers leave nothing in them. Parity is measured on the Test
split of the model's data directory: ONNX probabilities within 1e-4 of
Keras', TFLite top-1 agreement with Keras at least 99% and its accuracy
within 1 point.
Each file is written only if its own parity holds; one that fails is removed
and the exit status is 1, so predict.py's automatic backend choice never picks
a broken export.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import common
from core.calibration import activate
from core.front_ends import front_end_of

ONNX_MAX_DIFF = 1e-4         # max |p_onnx - p_keras| over every Test clip and class
TFLITE_MIN_AGREEMENT = 0.99  # share of Test clips whose top-1 class matches Keras'
TFLITE_MAX_ACC_GAP = 0.01    # |accuracy_tflite - accuracy_keras|
EXPLAIN_MAX_DIFF = 2e-2      # ||map_onnx - map_keras|| / ||map_keras||, explain.py's graphs (README: explain)
PARITY_BATCH = 32            # bounds the activation memory of the 2D-CNN variants
INT8_SHARE = 0.9             # the largest weight tensors holding this share of the weights become int8
QUANTIZATIONS = {"weights": f"the largest weight tensors ({INT8_SHARE:.0%} of the weights) int8 per output channel, "
                            "dequantised at load; the rest, arithmetic and I/O float32",
                 "dynamic-range": "int8 weights; hybrid kernels round activations to int8 on the fly "
                                  "(tf.lite.Optimize.DEFAULT); float32 I/O"}


class ExportError(RuntimeError):
    """A model that does not convert cleanly; ``str()`` is one line."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="trained model directory, e.g. model/baseline")
    p.add_argument("--data-dir", type=Path,
                   help="dataset root whose Test/ split checks parity (default: the model's config.json data_dir)")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE, help="feature cache (default: %(default)s)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="weights",
                   help="TFLite scheme: int8 weights only (default; closest to Keras), or the converter's "
                        "dynamic-range quantisation (int8 activations too: faster on some CPUs, drifts more)")
    p.add_argument("--skip-parity", action="store_true",
                   help="write the files without checking them (when no Test data is at hand)")
    return p.parse_args(argv)


def input_spec(shape: tuple, batch, name: str):
    """The exported graphs' one input: float32 (batch, *shape) named after the front end (log_mel, ...)."""
    import tensorflow as tf
    return tf.TensorSpec((batch, *shape), tf.float32, name=name)


def inference_model(model, input_name: str):
    """``model`` (the logits and embedding view) in a functional wrapper that calls it with training=False.

    model.export traces ``model.__call__`` with training unset, and then Keras'
    random layers (augmentation, noise, the dropout inside attention) still
    put random ops into the graph, which tf2onnx cannot convert. With
    training=False baked into the call they leave no trace in the graph.
    """
    import keras
    inputs = keras.Input(model.input_shape[1:], name=input_name)
    return keras.Model(inputs, model(inputs, training=False), name=f"{model.name}_inference")


def register_erfc() -> None:
    """Teach tf2onnx TensorFlow's Erfc op, as 1 - Erf.

    TensorFlow builds the exact GELU (the transformer's MLP activation) on
    Erfc, which tf2onnx 1.17 cannot convert (onnx/tensorflow-onnx PR #2463 is
    still open); ONNX has Erf since opset 9. Where 1 - erf(x) loses the
    relative precision of a tiny erfc(x), GELU multiplies it by ~0 anyway.
    Registering twice just replaces the handler.
    """
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.ones((), dtype))
            erf = ctx.make_node("Erf", [node.input[0]])
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def export_onnx(model, shape: tuple, input_name: str, path: Path) -> None:
    """Write ``model`` as ONNX with a dynamic batch dimension; refuse unconverted or random ops."""
    import onnx
    register_erfc()
    with warnings.catch_warnings():   # Keras' numpy-2 patch for tf2onnx touches the deprecated np.object
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", input_signature=[input_spec(shape, None, input_name)], verbose=False)
    # tf2onnx leaves the TensorFlow ops it cannot convert in the graph, under their TensorFlow names
    bad = sorted({n.op_type for n in onnx.load(str(path)).graph.node
                  if "Random" in n.op_type or not onnx.defs.has(n.op_type, n.domain)})
    if bad:
        raise ExportError(f"ops {bad} are not ONNX ops or draw random numbers at inference (tf2onnx cannot "
                          f"convert them; keep augmentation out of the saved model)")


def export_tflite(model, shape: tuple, input_name: str, path: Path, quantization: str) -> None:
    """Write ``model`` as TFLite with int8 weights, built-in ops only, batch size 1.

    ``quantization`` is "weights" (``int8_weights``: int8 storage, float
    arithmetic) or "dynamic-range" (tf.lite.Optimize.DEFAULT: the hybrid
    kernels also round each activation tensor to int8 on the fly). Keras 3
    models convert through a SavedModel (from_concrete_functions loses their
    variables). A fixed batch lets LSTM and attention layers lower to built-in
    ops; SELECT_TF_OPS is left off because the plain LiteRT interpreter cannot
    run them.
    """
    import keras
    import tensorflow as tf
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".saved_model-") as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)
        # the signature names the outputs, and backends.TFLitePredictor takes them by these names
        archive.add_endpoint("serve", lambda x: dict(zip(common.VIEW_OUTPUTS, model(x, training=False))),
                             input_signature=[input_spec(shape, 1, input_name)])
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantization == "dynamic-range":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except Exception as e:
            raise ExportError(f"TFLite conversion failed ({type(e).__name__}: {str(e).strip()[-300:]})") from None
    path.write_bytes(int8_weights(flatbuffer) if quantization == "weights" else flatbuffer)


def largest_covering(sizes: dict, share: float) -> list:
    """The keys of ``sizes``, largest value first, up to the first prefix whose values sum to ``share`` of all."""
    total, covered, chosen = sum(sizes.values()), 0, []
    for key in sorted(sizes, key=sizes.get, reverse=True):
        if covered >= share * total:
            break
        chosen.append(key)
        covered += sizes[key]
    return chosen


def int8_weights(flatbuffer: bytes, share: float = INT8_SHARE) -> bytes:
    """A float TFLite model with the large weight tensors of its linear layers stored as int8.

    The constant float32 weights of FULLY_CONNECTED, CONV_2D and
    DEPTHWISE_CONV_2D ops are taken largest first until they hold ``share`` of
    all such values; each becomes symmetric int8 with one scale per output
    channel, max|w| / 127, followed by a DEQUANTIZE op. Every tensor adds
    about the same rounding error to the output whatever its size, while the
    bytes saved grow with it, so the small tensors stay float32 (on the seed's
    network, the three small kernels hold 2% of the weights and more than half
    of the error). LiteRT runs a DEQUANTIZE of a constant once, when the model
    loads, so the arithmetic stays float32: activations are never rounded, as
    they are in the converter's dynamic-range kernels. The converter has no
    switch for this (tensorflow/tensorflow#38781), hence the rewrite of its
    output.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    ops = schema.BuiltinOperator
    weight_axis = {ops.FULLY_CONNECTED: 0, ops.CONV_2D: 0, ops.DEPTHWISE_CONV_2D: 3}   # the output-channel axis
    model = flatbuffer_utils.read_model_from_bytearray(flatbuffer)
    candidates = {}   # (graph, tensor index) -> output-channel axis
    for g, graph in enumerate(model.subgraphs):
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            axis = weight_axis.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if axis is not None and len(op.inputs) > 1:
                weight = graph.tensors[op.inputs[1]]
                if weight.type == schema.TensorType.FLOAT32 and model.buffers[weight.buffer].data is not None:
                    candidates[(g, op.inputs[1])] = axis
    chosen = largest_covering({key: int(np.prod(model.subgraphs[key[0]].tensors[key[1]].shape))
                               for key in candidates}, share)

    dequantize = schema.OperatorCodeT()
    dequantize.builtinCode = dequantize.deprecatedBuiltinCode = ops.DEQUANTIZE
    dequantize.version = 5   # int8 with per-channel scales
    model.operatorCodes.append(dequantize)
    dequantize_ops = {g: [] for g in range(len(model.subgraphs))}
    for g, index in chosen:
        graph, axis = model.subgraphs[g], candidates[(g, index)]
        weight = graph.tensors[index]
        w = np.frombuffer(bytes(model.buffers[weight.buffer].data), np.float32).reshape(weight.shape)
        scale = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True) / 127
        scale[scale == 0] = 1.0
        stored = schema.BufferT()
        stored.data = np.frombuffer(np.round(w / scale).astype(np.int8).tobytes(), np.uint8)
        model.buffers.append(stored)
        model.buffers[weight.buffer].data = None   # the float tensor is now DEQUANTIZE's output
        params = schema.QuantizationParametersT()
        params.scale, params.zeroPoint, params.quantizedDimension = scale.ravel().tolist(), [0] * scale.size, axis
        int8 = schema.TensorT()
        int8.name, int8.shape, int8.type = (weight.name or b"") + b"_int8", list(weight.shape), schema.TensorType.INT8
        int8.buffer, int8.quantization = len(model.buffers) - 1, params
        graph.tensors.append(int8)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [len(graph.tensors) - 1], [index]
        dequantize_ops[g].append(op)
    for g, graph in enumerate(model.subgraphs):
        graph.operators = dequantize_ops[g] + graph.operators   # operators run in list order
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def load_test_split(config: dict, data_dir: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Front-end features (n, ...) and labels of the Test clips of the model's classes."""
    front_end = front_end_of(config)
    test_dir = data_dir / "Test"
    if not test_dir.is_dir():
        raise common.DatasetError(f"{test_dir}: no Test split to check parity on (pass --data-dir, or --skip-parity)")
    classes = config["classes"]
    pairs = [(f, c) for f, c in zip(*common.list_class_files(test_dir)) if c in classes]
    clips, _ = common.load_clips([f for f, _ in pairs], [c for _, c in pairs], classes, front_end.cfg,
                                 common.FeatureCache(cache_dir), desc="test features")
    if not len(clips.y):
        raise common.DatasetError(f"{test_dir}: no readable clips of the model's classes")
    return front_end.featurize(clips, cache_dir).x, clips.y


def batched(predict, x: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(x[i:i + PARITY_BATCH]) for i in range(0, len(x), PARITY_BATCH)])


def agreement(probs: np.ndarray, reference: np.ndarray, y: np.ndarray) -> dict:
    """How closely ``probs`` follow the Keras ``reference`` on labelled clips ``y``.

    ``widest_flipped_margin`` is the largest reference top-1 minus top-2
    probability among the clips whose top-1 changed: a small value means only
    near-ties flipped, which any perturbation of that size would flip.
    """
    flipped = probs.argmax(1) != reference.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    return {"max_abs_diff": float(np.abs(probs - reference).max()),
            "top1_agreement": float(np.mean(~flipped)),
            "disagreements": int(flipped.sum()),
            "widest_flipped_margin": float((top2[:, 1] - top2[:, 0])[flipped].max(initial=0.0)),
            "accuracy": float(np.mean(probs.argmax(1) == y))}


def check_parity(clf, staging: Path, data_dir: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """Keras vs the staged ONNX and TFLite files on the Test split of ``data_dir`` (features ``x``, labels ``y``);
    ``passed`` says whether every threshold holds."""

    def probabilities(predictor):   # the head's own: softmax, or sigmoid for a multi-label model
        return lambda batch: activate(predictor.run(batch)[0], clf.activation)

    keras_probs = batched(probabilities(clf.predictor), x)
    onnx = agreement(batched(probabilities(common.OnnxPredictor(staging / common.ONNX_FILE)), x), keras_probs, y)
    tflite = agreement(probabilities(common.TFLitePredictor(staging / common.TFLITE_FILE))(x), keras_probs, y)
    keras_acc = float(np.mean(keras_probs.argmax(1) == y))
    onnx["passed"] = onnx["max_abs_diff"] <= ONNX_MAX_DIFF
    tflite["passed"] = (tflite["top1_agreement"] >= TFLITE_MIN_AGREEMENT
                        and abs(tflite["accuracy"] - keras_acc) <= TFLITE_MAX_ACC_GAP + 1e-9)  # 1/100 is not 0.01
    return {"data_dir": str(data_dir), "n_test": int(len(y)), "keras": {"accuracy": keras_acc},
            "onnx": onnx, "tflite": tflite,
            "thresholds": {"onnx_max_abs_diff": ONNX_MAX_DIFF, "tflite_min_top1_agreement": TFLITE_MIN_AGREEMENT,
                           "tflite_max_accuracy_gap": TFLITE_MAX_ACC_GAP},
            "passed": onnx["passed"] and tflite["passed"]}


def export_explanation(clf, staging: Path, model_dir: Path, windows: np.ndarray | None) -> dict:
    """explain.py's graphs (core.explain_graphs), installed in ``model_dir``/explain if they give Keras' maps.

    Checked (unless ``windows`` is None) on ``windows`` (the first three Test windows): the
    probabilities within model.onnx's 1e-4 of Keras', and for each window's predicted
    class every gradient method's map within 2 % of Keras' (L2 norm of the
    difference over the map's). Not closer: float rounding decides ReLUs and max-pool
    winners that sit at a tie, and a deep network's gradient follows them (a 1-epoch VGG's
    maps: 0.7 % from TensorFlow to onnxruntime), while a broken conversion misplaces most
    of the map.
    A model whose backward passes tf2onnx cannot convert (a recurrent one) is explained
    with Keras, as before.
    """
    from core import explain_graphs, saliency
    staged, installed = staging / explain_graphs.GRAPHS_DIR, model_dir / explain_graphs.GRAPHS_DIR
    try:
        record = explain_graphs.export_graphs(clf.predictor.model, staged)
    except explain_graphs.GraphsUnavailable as e:
        shutil.rmtree(installed, ignore_errors=True)
        return {"written": False, "reason": str(e)}
    if windows is not None:
        keras_side, graph_side = saliency.Explainer(clf.predictor.model), explain_graphs.GraphExplainer(staging)
        worst = 0.0
        for window in windows:
            c = int(graph_side.probabilities(window[None])[0].argmax())
            for method in ("saliency", "smoothgrad", "ig", "gradcam", "lrp"):
                if method in record["methods"]:
                    expected = keras_side.explain(method, window, c)
                    diff = np.linalg.norm(graph_side.explain(method, window, c) - expected)
                    worst = max(worst, float(diff / max(np.linalg.norm(expected), 1e-12)))
        # LIME, SHAP and the metrics' curves read the probabilities graph: held to model.onnx's rule
        probability_diff = float(np.abs(graph_side.probabilities(windows)
                                        - np.asarray(clf.predictor.model.predict_on_batch(windows))).max())
        record.update(max_relative_diff=worst, max_probability_diff=probability_diff,
                      passed=worst <= EXPLAIN_MAX_DIFF and probability_diff <= ONNX_MAX_DIFF)
    record["written"] = record.get("passed", True)
    shutil.rmtree(installed, ignore_errors=True)
    if record["written"]:
        os.replace(staged, installed)
    return record


def explanation_line(record: dict) -> str:
    """One line on the explanation graphs: written (and checked) or why not."""
    if record["written"]:
        checked = (f", maps within {record['max_relative_diff']:.1e} of Keras' (L2)"
                   if "max_relative_diff" in record else " (not checked)")
        return f"explain/: graphs for {', '.join(record['methods'])}{checked}: explain.py runs without TensorFlow"
    if "reason" in record:
        return f"explain/ not written: {record['reason']}; explain.py uses the Keras model"
    return (f"explain/ not written: its maps differ from Keras' by {record['max_relative_diff']:.1e} (L2; limit "
            f"{EXPLAIN_MAX_DIFF:g}), its probabilities by {record['max_probability_diff']:.1e} (limit "
            f"{ONNX_MAX_DIFF:g}); explain.py uses the Keras model")


def parity_table(parity: dict, sizes: dict) -> str:
    """The parity results as aligned text, one row per backend."""
    rows = [f"{'backend':<8}{'file':<26}{'size':>9}{'max|dp|':>10}{'top-1 agree':>13}{'accuracy':>10}"]
    for backend, file in common.FILES.items():
        r = parity[backend]
        verdict = "" if backend == "keras" else ("  ok" if r["passed"] else "  FAILED")
        diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-"
        agree = f"{100 * r['top1_agreement']:.1f}%" if "top1_agreement" in r else "-"
        rows.append(f"{backend:<8}{file:<26}{sizes[backend] / 1e6:>6.2f} MB{diff:>10}{agree:>13}"
                    f"{r['accuracy']:>10.4f}{verdict}")
    return "\n".join(rows)


def versions() -> dict:
    import importlib
    return {m: importlib.import_module(m).__version__
            for m in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert")}


def install(staging: Path, model_dir: Path, parity: dict | None) -> list[str]:
    """Move the staged files that passed parity (all of them, if unchecked) into ``model_dir``.

    The old copy of a file that failed is deleted: the Keras model cannot have
    changed since (retraining replaces the whole directory), so it would fail too.
    """
    written = []
    for backend in ("onnx", "tflite"):
        if parity is None or parity[backend]["passed"]:
            os.replace(staging / common.FILES[backend], model_dir / common.FILES[backend])
            written.append(common.FILES[backend])
        else:
            (model_dir / common.FILES[backend]).unlink(missing_ok=True)
    return written


def export_record(model_dir: Path, front_end, sizes: dict, seconds: float, quantization: str,
                  parity: dict | None, written: list[str]) -> dict:
    """The content of export.json: files, input (and the front end that makes it), quantisation, parity, versions."""
    keras_file, onnx_file, tflite_file = common.FILES["keras"], common.ONNX_FILE, common.TFLITE_FILE
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "export_seconds": round(seconds, 1),
            "keras_model": {"file": keras_file, "sha1": common.file_hash(model_dir / keras_file)},
            "input": {"name": front_end.input_name, "shape": [None, *front_end.input_shape], "dtype": "float32"},
            "front_end": front_end.config()["front_end"],
            "onnx": {"file": onnx_file, "written": onnx_file in written, "bytes": sizes["onnx"], "batch": "dynamic"},
            "tflite": {"file": tflite_file, "written": tflite_file in written, "bytes": sizes["tflite"], "batch": 1,
                       "quantization": quantization, "scheme": QUANTIZATIONS[quantization]},
            "parity": parity, "versions": versions()}


def main(argv=None):
    args = parse_args(argv)
    try:
        clf = common.Classifier(args.model_dir, backend="keras")
        shape, name = clf.front_end.input_shape, clf.front_end.input_name
        # everything is built and checked in a hidden staging folder, then renamed into place
        with tempfile.TemporaryDirectory(dir=args.model_dir, prefix=".export-") as tmp:
            staging, start = Path(tmp), time.time()
            model = inference_model(clf.predictor.view, name)   # outputs: logits, embedding
            export_onnx(model, shape, name, staging / common.ONNX_FILE)
            export_tflite(model, shape, name, staging / common.TFLITE_FILE, args.quantization)
            seconds = time.time() - start
            print(f"exported {args.model_dir} in {seconds:.1f} s")
            sizes = {b: (args.model_dir / f if b == "keras" else staging / f).stat().st_size
                     for b, f in common.FILES.items()}
            parity = x = None
            if not args.skip_parity:
                data_dir = args.data_dir or Path(clf.config["data_dir"])
                x, y = load_test_split(clf.config, data_dir, args.cache_dir)
                parity = check_parity(clf, staging, data_dir, x, y)
                print(f"parity on {parity['n_test']} Test clips:\n{parity_table(parity, sizes)}")
            written = install(staging, args.model_dir, parity)
            explanation = None
            if clf.front_end.kind == "log_mel":
                explanation = export_explanation(clf, staging, args.model_dir, None if x is None else x[:3])
                print(explanation_line(explanation))
    except (common.ModelDirError, common.DatasetError) as e:
        sys.exit(f"error: {e}")
    except ExportError as e:
        sys.exit(f"error: {args.model_dir}: {e}")
    record = export_record(args.model_dir, clf.front_end, sizes, seconds, args.quantization, parity, written)
    record["explain"] = explanation
    common.atomic_write(args.model_dir / "export.json", json.dumps(record, indent=2))
    explain_dir = ["explain/"] if explanation and explanation["written"] else []
    print(f"wrote {', '.join([*written, *explain_dir, 'export.json'])} to {args.model_dir}"
          + (" (parity not checked)" if parity is None else ""))
    if parity and not parity["passed"]:
        failed = [common.FILES[b] for b in ("onnx", "tflite") if not parity[b]["passed"]]
        flips = parity["tflite"]
        if flips["disagreements"]:
            print(f"TFLite changed the top-1 class of {flips['disagreements']} of {parity['n_test']} clips; "
                  f"Keras' top-2 margin on them was at most {flips['widest_flipped_margin']:.4f}")
        sys.exit(f"parity FAILED: {', '.join(failed)} not written (details in export.json)")


if __name__ == "__main__":
    main()
