"""The explanation methods' model computations as ONNX graphs, so that explain.py runs without TensorFlow.

Every gradient method needs one or two passes backward through the model:
d logit_c / d x (saliency, SmoothGrad, IG), a convolution's activations and
their gradient (Grad-CAM), and the LRP epsilon rule's relevance. TensorFlow
traces each as a graph like any other, and tf2onnx converts it, but for four
ops that only backward passes hold (``ReluGrad``, ``MaxPoolGrad``, ``ShapeN``,
and layer normalisation's ``RsqrtGrad``), for which :func:`register_gradient_ops`
teaches it ONNX equivalents. A recurrent network's loops are beyond it. The
graphs (written by ``export.py`` into ``<model-dir>/explain/``):

    window.onnx         x (1, frames, mels), class c -> gradient [, activations, activation_gradient, relevance]
    batch.onnx          x (32, frames, mels), class c -> gradient: SmoothGrad's noisy copies, IG's path
    probabilities.onnx  x (n, frames, mels) -> the model's outputs: LIME, SHAP and the metrics' curves
    graphs.json         which methods they serve (and which only the Keras model does: attention),
                        the batch, the Grad-CAM layer

Batches are fixed: with a free batch dimension tf2onnx meets more gradient-only
ops (shape arithmetic); a shorter batch is padded. Exporting needs TensorFlow;
:class:`GraphExplainer` needs onnxruntime and NumPy only (starting it takes
about 0.2 s, against about 5 s for TensorFlow, Keras and the model).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .features import n_real_frames
from .maps import METHODS, MapExplainer, grad_cam_map, window_predictor

GRAPHS_DIR = "explain"
BATCH = 32
KERAS_ONLY = ("attention",)   # maps read from inside the model's layers, not from a gradient or an output


# ---------------------------------------------------------------- export (TensorFlow, tf2onnx)
def register_gradient_ops() -> None:
    """Teach tf2onnx the gradient-only TensorFlow ops of a CNN's backward pass (registering twice replaces)."""
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("ReluGrad")
    class ReluGrad:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):   # gradients * (features > 0)
            dtype = ctx.get_dtype(node.input[1])
            zero = ctx.make_const(utils.make_name(f"{node.name}_zero"),
                                  np.zeros((), utils.map_onnx_to_numpy_type(dtype)))
            positive = ctx.make_node("Greater", [node.input[1], zero.output[0]])
            mask = ctx.make_node("Cast", [positive.output[0]], attr={"to": dtype})
            node.type = "Mul"
            ctx.replace_inputs(node, [node.input[0], mask.output[0]])

    @tf_op("RsqrtGrad")
    class RsqrtGrad:
        @classmethod
        def version_1(cls, ctx, node, **kwargs):   # d/dx x^-1/2 from y = x^-1/2: dy * -y^3 / 2 (layer normalisation)
            y, dy = node.input
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(y))
            half = ctx.make_const(utils.make_name(f"{node.name}_half"), np.array(-0.5, dtype))
            cube = ctx.make_node("Mul", [ctx.make_node("Mul", [y, y]).output[0], y]).output[0]
            node.type = "Mul"
            ctx.replace_inputs(node, [ctx.make_node("Mul", [dy, cube]).output[0], half.output[0]])

    @tf_op("ShapeN")
    class ShapeN:
        @classmethod
        def version_1(cls, ctx, node, **kwargs):   # one Shape per input
            out_type = node.get_attr_value("out_type")
            for source, output in zip(list(node.input), list(node.output)):
                shape = ctx.make_node("Shape", [source])
                cast = ctx.make_node("Cast", [shape.output[0]], attr={"to": out_type})
                ctx.replace_all_inputs(output, cast.output[0])
            ctx.remove_node(node.name)

    @tf_op("MaxPoolGrad")
    class MaxPoolGrad:
        @classmethod
        def version_16(cls, ctx, node, **kwargs):
            # each window's gradient goes to the position of its maximum (the first, as TensorFlow's), summed
            # where windows overlap: ONNX MaxPool's indices (NCHW, flat) and a scatter-add
            x, _, grad = node.input
            k, s = list(node.get_attr("ksize").ints), list(node.get_attr("strides").ints)
            utils.make_sure(node.get_attr_value("data_format") in (b"NHWC", "NHWC", None), "MaxPoolGrad: NHWC only")
            padding = node.get_attr_value("padding")
            pads = [0, 0, 0, 0]
            if padding in (b"SAME", "SAME"):   # what the last window lacks, the larger half at the end (TensorFlow's)
                for i, (n, kk, ss) in enumerate(zip(ctx.get_shape(x)[1:3], k[1:3], s[1:3])):
                    total = max((-(-n // ss) - 1) * ss + kk - n, 0)
                    pads[i], pads[i + 2] = total // 2, total - total // 2
            x_nchw = ctx.make_node("Transpose", [x], attr={"perm": [0, 3, 1, 2]}).output[0]
            pool = ctx.make_node("MaxPool", [x_nchw], attr={"kernel_shape": k[1:3], "strides": s[1:3], "pads": pads},
                                 output_count=2)
            flat = ctx.make_const(utils.make_name("flat"), np.array([-1], np.int64)).output[0]
            g_nchw = ctx.make_node("Transpose", [grad], attr={"perm": [0, 3, 1, 2]}).output[0]
            x_flat = ctx.make_node("Reshape", [x_nchw, flat]).output[0]
            scattered = ctx.make_node("ScatterElements", [
                ctx.make_node("Sub", [x_flat, x_flat]).output[0],
                ctx.make_node("Reshape", [pool.output[1], flat]).output[0],
                ctx.make_node("Reshape", [g_nchw, flat]).output[0]], attr={"axis": 0, "reduction": "add"}).output[0]
            shaped = ctx.make_node("Reshape", [scattered, ctx.make_node("Shape", [x_nchw]).output[0]]).output[0]
            node.type = "Transpose"
            ctx.replace_inputs(node, [shaped])
            node.set_attr("perm", [0, 2, 3, 1])


class GraphsUnavailable(ValueError):
    """tf2onnx cannot convert a model's backward passes (e.g. a recurrent network's loops); ``str()`` is one line."""


def export_graphs(model, directory: Path) -> dict:
    """Write ``model``'s explanation graphs (a Keras classifier of log-Mel windows) and graphs.json to ``directory``.

    Grad-CAM (at the last convolution) and LRP are exported for a model with
    convolutions, as :class:`core.saliency.Explainer` offers them. Returns graphs.json's content;
    raises :class:`GraphsUnavailable` when a graph keeps ops that are not ONNX ops.
    """
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from .saliency import (LRP_EPSILON, Explainer, cam_gradients, conv_probe, last_conv_layer, logit_gradient,
                           logits_model, lrp_relevance)
    recurrent = [layer.name for layer in model.layers
                 if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
    if recurrent:   # found first: converting a loop's backward pass fails deep inside TensorFlow, noisily
        raise GraphsUnavailable(f"recurrent layer {recurrent[0]}: tf2onnx cannot convert its loop's backward pass")
    register_gradient_ops()
    directory.mkdir(parents=True, exist_ok=True)
    scores = logits_model(model)
    shape = tuple(scores.input_shape[1:])
    keras_side = Explainer(model)
    offered = [m for m in METHODS if keras_side.available(m) is None]   # as explain.py on the Keras model
    probe = conv_probe(model) if "gradcam" in offered else None

    def spec(batch):
        return [tf.TensorSpec((batch, *shape), tf.float32, name="x"), tf.TensorSpec((), tf.int32, name="c")]

    def window(x, c):
        outputs = {"gradient": logit_gradient(scores, x, c)}
        if probe is not None:
            activations, activation_gradient = cam_gradients(probe, x, c)
            outputs.update(activations=activations, activation_gradient=activation_gradient,
                           relevance=lrp_relevance(scores, x, c, LRP_EPSILON))
        return {name: tf.identity(t, name=name) for name, t in outputs.items()}

    def batch(x, c):
        return {"gradient": tf.identity(logit_gradient(scores, x, c), name="gradient")}

    def probabilities(x):
        return {"probabilities": tf.identity(model(x, training=False), name="probabilities")}

    any_batch = [tf.TensorSpec((None, *shape), tf.float32, name="x")]
    for name, fn, signature in (("window", window, spec(1)), ("batch", batch, spec(BATCH)),
                                ("probabilities", probabilities, any_batch)):
        function = tf.function(fn, input_signature=signature)
        try:
            graph, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17,
                                                     output_path=str(directory / f"{name}.onnx"))
        except Exception as e:   # tf2onnx's own errors have no common type
            raise GraphsUnavailable(f"{name} graph: {str(e).splitlines()[0]}") from e
        bad = sorted({n.op_type for n in graph.graph.node if not onnx.defs.has(n.op_type, n.domain)})
        if bad:
            raise GraphsUnavailable(f"{name} graph: TensorFlow ops {', '.join(bad)} have no ONNX form here")
    record = {"methods": [m for m in offered if m not in KERAS_ONLY], "batch": BATCH, "input_shape": list(shape),
              "lrp_epsilon": LRP_EPSILON, "gradcam_layer": last_conv_layer(model).name if probe is not None else None,
              "keras_only": [m for m in offered if m in KERAS_ONLY]}
    (directory / "graphs.json").write_text(json.dumps(record, indent=2))
    return record


# ---------------------------------------------------------------- run (onnxruntime)
def has_graphs(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds explanation graphs (``export.py`` writes them for log-Mel models)."""
    return (Path(model_dir) / GRAPHS_DIR / "graphs.json").is_file()


class GraphExplainer(MapExplainer):
    """:class:`core.saliency.Explainer`'s methods for LIME, SHAP and the gradient methods, run on the ONNX graphs.

    Gives the same maps (tested within float rounding) without importing TensorFlow.
    """

    def __init__(self, model_dir: Path, patch=(16, 16), lime_samples: int = 1000, shap_samples: int = 1000,
                 seed: int = 0):
        import onnxruntime as ort
        directory = Path(model_dir) / GRAPHS_DIR
        self.record = json.loads((directory / "graphs.json").read_text())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.sessions = {name: ort.InferenceSession(str(directory / f"{name}.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
                         for name in ("window", "batch", "probabilities")}
        self.predict = window_predictor(self.probabilities, self.record["input_shape"][0])
        self.patch, self.lime_samples, self.shap_samples, self.seed = tuple(patch), lime_samples, shap_samples, seed

    def available(self, method: str) -> str | None:
        """None if the graphs serve ``method``, else the one-line reason they do not."""
        if method in self.record["methods"]:
            return None
        return (f"the model's explanation graphs do not serve '{method}' "
                f"(they serve {', '.join(self.record['methods'])})")

    def _run(self, graph: str, x: np.ndarray, c: int) -> dict:
        session = self.sessions[graph]
        feeds = {"x": np.asarray(x, np.float32), "c": np.array(c, np.int32)}
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))

    def probabilities(self, xs: np.ndarray) -> np.ndarray:
        """The model's outputs for a batch of windows (n, frames, mels)."""
        return self.sessions["probabilities"].run(None, {"x": np.asarray(xs, np.float32)})[0]

    def gradients(self, xs: np.ndarray, c: int) -> np.ndarray:
        """d logit_c / d xs for any batch (n, frames, mels): the window graph for one, else batches of 32."""
        if len(xs) == 1:
            return self._run("window", xs, c)["gradient"]
        parts = []
        for i in range(0, len(xs), BATCH):
            chunk = xs[i:i + BATCH]
            padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk), *chunk.shape[1:]), np.float32)])
            parts.append(self._run("batch", padded, c)["gradient"][:len(chunk)])
        return np.concatenate(parts)

    def model_map(self, method: str, x: np.ndarray, c: int) -> np.ndarray:
        """Grad-CAM's or LRP's map of class ``c`` on window ``x``, from the window graph."""
        outputs = self._run("window", x[None], c)
        if method == "gradcam":
            return grad_cam_map(outputs["activations"][0], outputs["activation_gradient"][0], x)
        return outputs["relevance"][0, :n_real_frames(x)]
