"""export.py and the inference backends: files, parity with Keras, backend choice, a TensorFlow-free start."""
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tone, write_wav

import export
from core import backends


def run_export(model_dir: Path, data_dir: Path, cache: Path) -> str:
    """Run export.py in-process (TensorFlow is imported once per session); returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        export.main(["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--cache-dir", str(cache)])
    return out.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_model_dir, data_dir):
    """A copy of the tiny trained baseline, exported (the session fixture itself stays Keras-only)."""
    out = tmp_path_factory.mktemp("exported")
    model_dir = out / "baseline"
    shutil.copytree(trained_model_dir, model_dir)
    return model_dir, run_export(model_dir, data_dir, out / "cache")


@pytest.fixture(scope="module")
def split_features(data_dir, trained_model_dir, tmp_path_factory):
    from core.inference import read_model_config
    return export.load_test_split(read_model_config(trained_model_dir), data_dir,
                                  tmp_path_factory.mktemp("cache"))


def test_export_writes_files_and_prints_parity(exported):
    model_dir, printed = exported
    assert {"model.onnx", "model_int8.tflite", "export.json"} <= {p.name for p in model_dir.iterdir()}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]      # no staging left behind
    assert "parity on" in printed and "FAILED" not in printed
    record = json.loads((model_dir / "export.json").read_text())
    parity = record["parity"]
    assert parity["passed"] and parity["n_test"] > 0
    assert parity["onnx"]["max_abs_diff"] <= 1e-4
    assert parity["tflite"]["top1_agreement"] >= 0.99
    assert abs(parity["tflite"]["accuracy"] - parity["keras"]["accuracy"]) <= 0.01
    assert record["input"]["shape"] == [None, 500, 128]
    assert record["explain"]["written"] and record["explain"]["max_relative_diff"] <= export.EXPLAIN_MAX_DIFF
    assert record["explain"]["max_probability_diff"] <= export.ONNX_MAX_DIFF
    assert {"window.onnx", "batch.onnx", "probabilities.onnx", "graphs.json"} == {
        p.name for p in (model_dir / "explain").iterdir()}
    assert "explain/: graphs for saliency, smoothgrad, ig, gradcam, lrp, lime, shap" in printed


def test_exported_models_map_features_to_logits_and_embedding(exported):
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter
    model_dir, _ = exported
    n_classes = len(json.loads((model_dir / "config.json").read_text())["classes"])
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (logits, embedding) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("log_mel", "tensor(float)", [500, 128])
    assert isinstance(inp.shape[0], str) and logits.shape[1:] == [n_classes]      # dynamic batch
    assert embedding.shape[1] == 128                    # the baseline's Dense(128) feeds its head
    interpreter = Interpreter(model_path=str(model_dir / "model_int8.tflite"))
    (tin,) = interpreter.get_input_details()
    assert list(tin["shape"]) == [1, 500, 128] and tin["dtype"] == np.float32
    signature = interpreter.get_signature_runner()
    assert {k: list(v["shape"]) for k, v in signature.get_output_details().items()} == {
        "head_logits": [1, n_classes], "head_embedding": [1, 128]}
    x = np.random.default_rng(0).standard_normal((3, 500, 128)).astype(np.float32)
    for backend in ("onnx", "tflite"):
        probs = backends.load_predictor(model_dir, backend).predict(x)
        assert probs.shape == (3, n_classes) and np.allclose(probs.sum(1), 1, atol=1e-3)


def test_parity_with_keras_on_test_split(exported, split_features):
    """Independent of export.py's own check: ONNX within 1e-4 of Keras, TFLite int8 agrees on top-1."""
    import common
    model_dir, _ = exported
    x, y = split_features
    clfs = {b: common.Classifier(model_dir, backend=b) for b in ("keras", "onnx", "tflite")}
    probs = {b: clf.predict_features(x) for b, clf in clfs.items()}
    assert np.abs(probs["onnx"] - probs["keras"]).max() <= 1e-4
    # every backend applies the same temperature and scores "unknown" alike
    assert all(clf.open_set.temperature == clfs["keras"].open_set.temperature for clf in clfs.values())
    scores = {b: clf.open_set.all_scores(*clf.predictor.run(x)) for b, clf in clfs.items()}
    for name in scores["keras"]:
        np.testing.assert_allclose(scores["onnx"][name], scores["keras"][name], rtol=1e-3, atol=1e-4)
    assert np.mean(probs["tflite"].argmax(1) == probs["keras"].argmax(1)) >= 0.99
    assert abs(np.mean(probs["tflite"].argmax(1) == y) - np.mean(probs["keras"].argmax(1) == y)) <= 0.01


def test_predict_onnx_and_tflite_agree_with_keras_without_tensorflow(exported, data_dir):
    import predict
    model_dir, _ = exported
    clip = sorted((data_dir / "Test").rglob("*.wav"))[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        predict.main(["--file", str(clip), "--model-dir", str(model_dir), "--backend", "keras", "--json"])
    keras_label = json.loads(out.getvalue())["label"]
    script = (
        "import json, sys, predict\n"
        f"for b in ('onnx', 'tflite'): predict.main(['--file', {str(clip)!r}, '--model-dir', {str(model_dir)!r},"
        " '--backend', b, '--json'])\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'librosa', 'pandas'}"
        " | set(sys.modules) & {'scipy.signal', 'scipy.optimize', 'scipy.stats'})))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *records, heavy = done.stdout.strip().splitlines()
    assert [json.loads(r)["label"] for r in records] == [keras_label, keras_label]
    # none of TensorFlow, Keras, librosa, pandas or the slow scipy modules was imported: a fast start, a small worker
    assert json.loads(heavy) == []


def test_explain_runs_on_the_graphs_without_tensorflow_and_agrees_with_keras(exported, tmp_path):
    import explain
    model_dir, _ = exported
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.5))
    argv = ["--model-dir", str(model_dir), "--file", str(clip), "--methods", "saliency", "gradcam", "lrp",
            "--steps", "4"]
    explain.main([*argv, "--out", str(tmp_path / "keras"), "--backend", "keras"])
    script = (f"import sys, explain\nexplain.main({[*argv, '--out', str(tmp_path / 'graphs')]!r})\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"        # auto chose the graphs: no TensorFlow, no Keras
    keras_maps = np.load(tmp_path / "keras" / "maps.npz", allow_pickle=False)
    graph_maps = np.load(tmp_path / "graphs" / "maps.npz", allow_pickle=False)
    for method in ("saliency", "gradcam", "lrp"):
        np.testing.assert_allclose(graph_maps[method], keras_maps[method], atol=1e-4 * np.abs(keras_maps[method]).max())
    assert (tmp_path / "graphs" / "report.html").stat().st_size > 10_000


def test_explain_backend_onnx_without_graphs_is_a_clear_error(trained_model_dir, tmp_path):
    import explain
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.0))
    with pytest.raises(SystemExit, match="--backend onnx: .* has no explanation graphs .*python export.py"):
        explain.main(["--model-dir", str(trained_model_dir), "--file", str(clip), "--backend", "onnx"])


def test_auto_backend_prefers_onnx_then_tflite_then_keras(tmp_path, monkeypatch):
    for name in backends.FILES.values():
        (tmp_path / name).write_bytes(b"")
    assert backends.resolve_backend(tmp_path) == "onnx"
    monkeypatch.setattr(backends, "runtime_installed", lambda b: b != "onnx")     # no onnxruntime here
    assert backends.resolve_backend(tmp_path) == "tflite"
    monkeypatch.undo()
    (tmp_path / "model.onnx").unlink()
    assert backends.resolve_backend(tmp_path) == "tflite"
    (tmp_path / "model_int8.tflite").unlink()
    assert backends.resolve_backend(tmp_path) == "keras"
    assert backends.resolve_backend(tmp_path, "onnx") == "onnx"     # an explicit choice is never replaced
    with pytest.raises(ValueError, match="unknown backend"):
        backends.resolve_backend(tmp_path, "torch")


def test_missing_onnx_file_is_a_clear_error(trained_model_dir, tmp_path, capsys):
    import predict
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.0))
    with pytest.raises(SystemExit) as e:
        predict.main(["--file", str(clip), "--model-dir", str(trained_model_dir), "--backend", "onnx"])
    message = str(e.value.code)
    assert "model.onnx: missing" in message and "python export.py --model-dir" in message
    assert "Traceback" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def attention_model_dir(tmp_path_factory, trained_model_dir):
    """A transformer-like model: augmentation layers, GELU, attention, layer norm, a prototype head with
    non-trainable weights in a registered custom layer (what the transformer variant saves)."""
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="test_export")
    class Prototypes(layers.Layer):
        def __init__(self, n, **kwargs):
            super().__init__(**kwargs)
            self.n = n

        def build(self, shape):
            self.prototypes = self.add_weight(name="prototypes", shape=(self.n, shape[-1]),
                                              initializer=keras.initializers.RandomNormal(stddev=2.0),
                                              trainable=False)

        def call(self, x):
            d = ops.sum(ops.square(ops.expand_dims(x, 1) - ops.expand_dims(self.prototypes, 0)), axis=-1)
            return ops.softmax(-d, axis=-1)

        def get_config(self):
            return {**super().get_config(), "n": self.n}

    keras.utils.set_random_seed(0)
    config = json.loads((trained_model_dir / "config.json").read_text())
    inputs = keras.Input((500, 128), name="log_mel")
    x = layers.GaussianNoise(0.1)(inputs)
    x = layers.Reshape((500, 128, 1))(x)
    x = layers.RandomTranslation(0.1, 0.1)(x)      # random ops in a traced graph unless stripped
    x = layers.Reshape((125, 512))(x)
    x = layers.Dense(16, activation="gelu")(x)     # exact GELU: TensorFlow's Erfc op, unknown to tf2onnx
    h = layers.LayerNormalization()(x)
    x = layers.Add()([x, layers.MultiHeadAttention(2, 8, dropout=0.1)(h, h)])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization()(x))
    model = keras.Model(inputs, Prototypes(len(config["classes"]))(x))
    model_dir = tmp_path_factory.mktemp("attention") / "transformer"
    model_dir.mkdir()
    # a hand-made model has no open-set statistics: its config says nothing about them
    (model_dir / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "open_set"}))
    model.save(model_dir / "animal_sound_model.keras")
    return model_dir


def test_attention_model_with_custom_layer_and_augmentation_exports(attention_model_dir, data_dir, tmp_path):
    printed = run_export(attention_model_dir, data_dir, tmp_path / "cache")
    assert "FAILED" not in printed
    assert json.loads((attention_model_dir / "export.json").read_text())["parity"]["passed"]


def test_a_backend_failing_parity_is_not_written(attention_model_dir, data_dir, tmp_path, monkeypatch):
    (attention_model_dir / "model.onnx").write_bytes(b"an older export")
    monkeypatch.setattr(export, "ONNX_MAX_DIFF", -1.0)             # no ONNX file can pass this
    with pytest.raises(SystemExit, match="parity FAILED: model.onnx not written"):
        run_export(attention_model_dir, data_dir, tmp_path / "cache")
    assert not (attention_model_dir / "model.onnx").exists()       # the old copy is gone too
    assert (attention_model_dir / "model_int8.tflite").is_file()
    record = json.loads((attention_model_dir / "export.json").read_text())
    assert not record["onnx"]["written"] and record["tflite"]["written"] and not record["parity"]["passed"]
    assert backends.resolve_backend(attention_model_dir) == "tflite"


def test_agreement_counts_flips_and_their_keras_margin():
    reference = np.array([[0.50, 0.45, 0.05], [0.90, 0.05, 0.05], [0.2, 0.3, 0.5]])
    probs = np.array([[0.44, 0.51, 0.05], [0.89, 0.06, 0.05], [0.1, 0.2, 0.7]])
    r = export.agreement(probs, reference, np.array([0, 0, 1]))
    assert r["disagreements"] == 1 and r["top1_agreement"] == pytest.approx(2 / 3)
    assert r["widest_flipped_margin"] == pytest.approx(0.05)      # only the 0.50 / 0.45 near-tie flipped
    assert r["accuracy"] == pytest.approx(1 / 3) and r["max_abs_diff"] == pytest.approx(0.2)
    assert export.agreement(reference, reference, np.zeros(3, int))["widest_flipped_margin"] == 0.0


def test_largest_covering_takes_the_largest_tensors_until_the_share_is_reached():
    sizes = {"dense": 1_007_616, "conv1": 12_288, "conv2": 6_144, "head": 1_280}
    assert export.largest_covering(sizes, 0.9) == ["dense"]                  # 98 % on its own
    assert export.largest_covering(sizes, 0.99) == ["dense", "conv1"]
    assert export.largest_covering(sizes, 1.0) == ["dense", "conv1", "conv2", "head"]
    assert export.largest_covering({"a": 10, "b": 10, "c": 10}, 0.5) == ["a", "b"]   # ties keep their order


def test_int8_weights_stores_int8_per_output_channel_and_computes_in_float(tmp_path):
    """The largest kernels (90% of the weights) become int8 with max|w|/127 per output unit behind a
    DEQUANTIZE; the smallest stays float; the model then computes with the dequantised kernels in
    float32, where the converter's dynamic-range scheme also rounds the activations (and so drifts
    further from that)."""
    import keras
    keras.utils.set_random_seed(3)
    inputs = keras.Input((64,))
    dense = [keras.layers.Dense(32, activation="relu"), keras.layers.Dense(32, activation="relu"),  # 2048, 1024
             keras.layers.Dense(4)]                                               # 128: 2048 + 1024 reach 90%
    hidden = dense[1](dense[0](inputs))
    model = keras.Model(inputs, [dense[2](hidden), hidden])    # logits and embedding, as export.py exports
    for scheme in export.QUANTIZATIONS:
        export.export_tflite(model, (64,), "log_mel", tmp_path / f"{scheme}.tflite", scheme)
    interpreter = backends.TFLitePredictor(tmp_path / "weights.tflite").interpreter
    int8 = sorted((t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8), key=lambda t: -t["shape"][1])
    assert [list(t["shape"]) for t in int8] == [[32, 64], [32, 32]]
    (w1, b1), (w2, b2), (w3, b3) = (layer.get_weights() for layer in dense)
    scales = [np.abs(w).max(0) / 127 for w in (w1, w2)]
    for tensor, w, scale in zip(int8, (w1, w2), scales):
        assert np.allclose(tensor["quantization_parameters"]["scales"], scale, rtol=1e-6)
        assert np.array_equal(interpreter.get_tensor(tensor["index"]), np.round(w / scale).T.astype(np.int8))

    x = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    w1q, w2q = (np.round(w / scale) * scale for w, scale in zip((w1, w2), scales))
    fake_quant = np.maximum(np.maximum(x @ w1q + b1, 0) @ w2q + b2, 0) @ w3 + b3
    outputs = {scheme: backends.TFLitePredictor(tmp_path / f"{scheme}.tflite").run(x)[0]
               for scheme in export.QUANTIZATIONS}
    assert np.abs(outputs["weights"] - fake_quant).max() < 1e-4
    assert np.abs(outputs["dynamic-range"] - fake_quant).max() > 1e-3      # its activations were rounded too
    sizes = {scheme: (tmp_path / f"{scheme}.tflite").stat().st_size for scheme in export.QUANTIZATIONS}
    assert sizes["weights"] < sizes["dynamic-range"] + 3 * 1024 / 4        # no float copy of a stored kernel is kept


def test_enhance_masked_network_exports_with_parity(trained_model_dir, data_dir, tmp_path):
    """enhance.py's padding masks (custom layers, max pools of a mask) convert to ONNX and TFLite."""
    import keras

    import enhance
    keras.utils.set_random_seed(1)
    config = json.loads((trained_model_dir / "config.json").read_text())
    model = enhance.build_model(500, 128, len(config["classes"]))
    head = model.get_layer("probabilities")
    head.set_weights([w * 30 for w in head.get_weights()])      # decisive answers, so top-1 is well defined
    model_dir = tmp_path / "enhance"
    model_dir.mkdir()
    # a hand-made model has no open-set statistics: its config says nothing about them
    (model_dir / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "open_set"}))
    model.save(model_dir / "animal_sound_model.keras")
    printed = run_export(model_dir, data_dir, tmp_path / "cache")
    assert "FAILED" not in printed
    parity = json.loads((model_dir / "export.json").read_text())["parity"]
    assert parity["passed"] and parity["onnx"]["max_abs_diff"] <= 1e-4


def test_numpy_log_mel_matches_librosa():
    """features.log_mel is numpy so that prediction starts without librosa; it must stay librosa's front end."""
    import librosa

    from core.features import FeatureConfig, log_mel
    cfg = FeatureConfig()
    for y in (tone("chirp", 2.0), tone("bark", 0.7, seed=3), tone("moo", 0.05)):
        ref = librosa.power_to_db(librosa.feature.melspectrogram(
            y=np.pad(y, (0, max(0, cfg.n_fft - len(y)))), sr=cfg.sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
            n_mels=cfg.n_mels, power=2.0), ref=np.max, top_db=cfg.top_db).T
        assert np.abs(log_mel(y, cfg) - ref).max() < 1e-3
