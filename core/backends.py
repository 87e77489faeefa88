"""Inference backends: one trained model run by Keras, ONNX Runtime or LiteRT (TFLite).

Every predictor maps a float32 feature batch (n, frames, mels) to
``(logits, embedding)``: the pre-softmax class scores (n, classes) and the
penultimate embedding (n, D) that open-set scores measure distances in
(:mod:`core.model_views` builds that view of the Keras model, and export.py
exports it). Files exported before the view existed return probabilities
only: their logits are the log-probabilities and their embedding is None.
Each reports the per-sample ``input_shape`` and ``n_classes`` it was built
for. Only :class:`KerasPredictor` imports TensorFlow; the ONNX and TFLite
predictors import their small runtimes alone, so a one-file prediction
starts in about a second instead of ten.

The exported files sit beside the Keras model (``export.py`` writes them).
A retrained variant replaces its whole directory, so an export can never
outlive the model it was made from.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

# The names export.py gives the two outputs of core.model_views.logits_and_embedding (which needs Keras).
VIEW_OUTPUTS = ("head_logits", "head_embedding")
MODEL_FILE = "animal_sound_model.keras"
ONNX_FILE = "model.onnx"
TFLITE_FILE = "model_int8.tflite"
FILES = {"keras": MODEL_FILE, "onnx": ONNX_FILE, "tflite": TFLITE_FILE}
RUNTIMES = {"keras": ("keras", "tensorflow"), "onnx": ("onnxruntime", "onnxruntime"),   # (module, pip name)
            "tflite": ("ai_edge_litert", "ai-edge-litert")}
AUTO_ORDER = ("onnx", "tflite", "keras")   # fastest first; Keras needs TensorFlow (~10 s to import)
BACKENDS = ("auto", *FILES)


class ModelDirError(RuntimeError):
    """A model directory that is missing, incomplete or incompatible; ``str()`` is one line."""


class Predictor:
    """What every backend shares: ``run`` gives (logits, embedding), ``predict`` the plain softmax."""
    name: str
    input_shape: tuple
    n_classes: int
    has_embedding: bool   # False for files exported before the logits and embedding view

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated class probabilities (n, classes): the softmax of the logits."""
        logits = self.run(x)[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


class KerasPredictor(Predictor):
    """The ``.keras`` model itself, loaded in safe mode (no deserialised code runs)."""
    name = "keras"

    def __init__(self, path: Path):
        import keras

        from . import layers  # noqa: F401  registers the custom layers saved models use
        from .model_views import logits_and_embedding
        try:
            self.model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as e:
            raise ModelDirError(f"{path}: cannot load ({type(e).__name__}: {str(e)[:200]})") from None
        self.view = logits_and_embedding(self.model)
        self.has_embedding = True
        self.input_shape = tuple(self.model.input_shape[1:])
        self.n_classes = int(self.model.output_shape[-1])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # predict_on_batch, not predict: ~1 ms instead of ~50 ms of per-call overhead
        logits, embedding = self.view.predict_on_batch(np.asarray(x, np.float32))
        return np.asarray(logits), np.asarray(embedding)


class OnnxPredictor(Predictor):
    """``model.onnx`` in ONNX Runtime (CPU), any batch size."""
    name = "onnx"

    def __init__(self, path: Path):
        import onnxruntime as ort
        options = ort.SessionOptions()
        # One thread: ORT's pool spin-waits after each run and steals the core that decodes and
        # featurises the next clip (measured on 2 cores: 8 ms per file instead of 16-20 ms).
        options.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelDirError(f"{path}: cannot load ({type(e).__name__}: {str(e)[:200]})") from None
        inp, outputs = self.session.get_inputs()[0], self.session.get_outputs()
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape[1:])
        self.n_classes = int(outputs[0].shape[-1])
        self.has_embedding = len(outputs) == 2

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {self.input_name: np.asarray(x, np.float32)})
        return outputs_of(outputs, self.has_embedding)


class TFLitePredictor(Predictor):
    """``model_int8.tflite`` in the LiteRT interpreter, one sample per call.

    export.py converts with a fixed batch of 1 (recurrent and attention layers
    convert to plain TFLite ops only with static shapes), so a batch is run
    sample by sample.
    """
    name = "tflite"

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter
        try:
            self.interpreter = Interpreter(model_path=str(path))
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise ModelDirError(f"{path}: cannot load ({type(e).__name__}: {str(e)[:200]})") from None
        inp = self.interpreter.get_input_details()[0]
        if inp["shape"][0] != 1:
            raise ModelDirError(f"{path}: batch size {inp['shape'][0]}, expected 1 (re-run export.py)")
        # Outputs are taken by their signature names: the converter orders the tensors themselves by name.
        self.runner = self.interpreter.get_signature_runner()
        signature = next(iter(self.interpreter.get_signature_list().values()))
        self.input_name, self.output_names = signature["inputs"][0], signature["outputs"]
        self.has_embedding = set(VIEW_OUTPUTS) <= set(self.output_names)
        if self.has_embedding:
            self.output_names = list(VIEW_OUTPUTS)
        self.input_shape = tuple(int(d) for d in inp["shape"][1:])
        self.n_classes = int(self.runner.get_output_details()[self.output_names[0]]["shape"][-1])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        rows = []
        for sample in np.asarray(x, np.float32):
            outputs = self.runner(**{self.input_name: sample[None]})
            rows.append([outputs[name][0].copy() for name in self.output_names])
        if not rows:
            return np.zeros((0, self.n_classes), np.float32), None
        return outputs_of([np.stack(column) for column in zip(*rows)], self.has_embedding)


def outputs_of(outputs: list, has_embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(logits, embedding)`` from an exported model's outputs: the view's two, or an old file's probabilities."""
    if has_embedding:
        return outputs[0], outputs[1]
    return np.log(np.maximum(outputs[0], 1e-12)), None


PREDICTORS = {"keras": KerasPredictor, "onnx": OnnxPredictor, "tflite": TFLitePredictor}


def runtime_installed(backend: str) -> bool:
    """Whether ``backend``'s runtime can be imported (checked without importing it)."""
    return importlib.util.find_spec(RUNTIMES[backend][0]) is not None


def resolve_backend(model_dir, backend: str = "auto") -> str:
    """The concrete backend for ``backend``: "auto" is the first of onnx, tflite, keras that can run here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return next((b for b in AUTO_ORDER if (Path(model_dir) / FILES[b]).is_file() and runtime_installed(b)),
                "keras")


def load_predictor(model_dir, backend: str = "auto"):
    """A predictor for the model in ``model_dir``; raises :class:`ModelDirError` if it cannot run."""
    name = resolve_backend(model_dir, backend)
    path = Path(model_dir) / FILES[name]
    if not path.is_file():
        hint = "" if name == "keras" else f"; create it with: python export.py --model-dir {model_dir}"
        raise ModelDirError(f"{path}: missing{hint}")
    if not runtime_installed(name):
        raise ModelDirError(f"the {name} backend needs a package: pip install {RUNTIMES[name][1]}")
    return PREDICTORS[name](path)
