"""The recurrent variants: construction, masking, attention weights, a smoke fit, prediction and export."""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from conftest import check_quick_robustness, tone, train_args, write_wav

keras = pytest.importorskip("keras")

import common  # noqa: E402
import train_lstm_attention  # noqa: E402
import train_rnn  # noqa: E402
from core.model_views import attention_weights  # noqa: E402

SHAPE = (500, 120)
TINY = ["--units", "4", "--crop-frames", "64"]


def sound(frames: int, seed: int = 0) -> np.ndarray:
    """(1, 500, 120) features: ``frames`` real frames, then padding."""
    x = np.zeros((1, *SHAPE), np.float32)
    x[0, :frames] = np.random.default_rng(seed).standard_normal((frames, SHAPE[1])) + 1.0
    return x


def build(cell: str, n_frames=SHAPE[0], attention_units: int = 0):
    keras.utils.set_random_seed(0)
    rows = np.random.default_rng(1).standard_normal((200, SHAPE[1])).astype(np.float32) * 3 + 1
    return train_rnn.build_model((n_frames, SHAPE[1]), 5, cell, rows, units=8, attention_units=attention_units)


@pytest.mark.parametrize("cell, attention_units", [("rnn", 0), ("lstm", 0), ("gru", 0), ("crnn", 0), ("lstm", 8)])
def test_construction_ignores_padding(cell, attention_units):
    saved, free = build(cell, attention_units=attention_units), build(cell, None, attention_units)
    free.set_weights(saved.get_weights())
    call = sound(77)
    probs = np.asarray(saved(call))
    assert probs.shape == (1, 5) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    # the same sound with 423 frames of padding or with none: padding must not move the answer
    np.testing.assert_allclose(probs, np.asarray(free(call[:, :77])), atol=1e-5)
    assert np.abs(np.asarray(saved(sound(77, seed=2))) - probs).max() > 1e-4    # another sound does move it
    names = {type(layer).__name__ for layer in saved.layers}
    assert ("MaskedAttentionPooling" in names) == bool(attention_units)
    assert ("Conv1D" in names) == (cell == "crnn")


def test_attention_weights_sum_to_one_over_real_frames_and_are_zero_on_padding(tmp_path):
    model = build("lstm", attention_units=8)
    x = np.concatenate([sound(30), sound(3, seed=1), np.zeros((1, *SHAPE), np.float32)])
    weights = attention_weights(model, x)
    assert weights.shape == (3, 500)
    np.testing.assert_allclose(weights[:2].sum(axis=1), 1.0, atol=1e-5)
    assert not weights[0, 30:].any() and not weights[1, 3:].any() and (weights[0, :30] > 0).all()
    assert not weights[2].any()                                  # a silent window attends to nothing
    model.save(tmp_path / "m.keras")                             # and the layer reloads by its registered name
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(attention_weights(again, x), weights, atol=1e-6)
    with pytest.raises(ValueError, match="no attention layer"):
        attention_weights(build("gru"), x)


def test_excerpts_come_from_the_real_frames():
    x = np.zeros((2, 10, 1), np.float32)
    x[0, :8, 0], x[1, :3, 0] = np.arange(1, 9), [1, 2, 3]
    lengths = np.array([8, 3])
    cuts = train_rnn.excerpts(x, lengths, np.array([0, 1, 0]), 4, np.random.default_rng(0))
    assert cuts.shape == (3, 4, 1)
    for cut in cuts[[0, 2], :, 0]:
        assert cut[0] in range(1, 6) and np.array_equal(np.diff(cut), [1, 1, 1])   # 4 consecutive real frames
    np.testing.assert_array_equal(cuts[1, :, 0], [1, 2, 3, 0])                       # shorter: whole, padded


def test_rnn_model_dir_is_named_after_the_cell():
    args = train_rnn.make_parser().parse_args(["--cell", "crnn"])
    assert args.model_dir is None and args.front_end == "mfcc"     # run() makes it model/rnn_crnn
    assert train_lstm_attention.make_parser().parse_args([]).model_dir.name == "lstm_attention"


def test_bad_cell_or_mfcc_size_is_one_clear_line(capsys):
    with pytest.raises(SystemExit):
        train_rnn.make_parser().parse_args(["--cell", "transformer"])
    assert "invalid choice: 'transformer'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="error: n_mfcc 200: at most n_mels"):
        train_rnn.main(["--n-mfcc", "200"])


@pytest.fixture(scope="module")
def lstm_attention_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lstm_attention")
    metrics = train_lstm_attention.main(train_args("lstm_attention", data_dir, out, *TINY, "--attention-units", "4"))
    assert 0 <= metrics["accuracy"] <= 1 and metrics["epochs_run"] == 1
    return out / "model" / "lstm_attention"


def test_smoke_fit_saves_an_mfcc_model_that_predicts_a_file(lstm_attention_dir, tmp_path):
    import predict
    config = json.loads((lstm_attention_dir / "config.json").read_text())
    assert config["variant"] == "lstm_attention" and config["front_end"]["kind"] == "mfcc"
    assert config["input_shape"] == list(SHAPE)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        predict.main(["--file", str(write_wav(tmp_path / "moo.wav", tone("moo", 1.0))), "--model-dir",
                      str(lstm_attention_dir), "--json"])
    record = json.loads(out.getvalue())
    assert record["label"] in config["classes"] + ["unknown"]


def test_train_rnn_smoke_fit_writes_model_rnn_cell(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                  # the default model dir is relative
    args = train_args("x", data_dir, tmp_path, *TINY)
    at = args.index("--model-dir")
    train_rnn.main(["--cell", "crnn", *args[:at], *args[at + 2:]])
    config = json.loads((tmp_path / "model" / "rnn_crnn" / "config.json").read_text())
    assert config["variant"] == "rnn_crnn" and config["network"] == "rnn_crnn"


def test_lstm_attention_exports_to_onnx_and_tflite_with_parity(lstm_attention_dir, data_dir, tmp_path):
    """A masked BiLSTM with attention converts to both; parity on the tiny Test split, then predict.py uses them."""
    import export
    model_dir = tmp_path / "lstm_attention"
    shutil.copytree(lstm_attention_dir, model_dir)
    model = keras.saving.load_model(model_dir / common.MODEL_FILE, safe_mode=True, compile=False)
    head = model.get_layer("probabilities")
    head.set_weights([w * 30 for w in head.get_weights()])      # decisive answers, so top-1 is well defined
    model.save(model_dir / common.MODEL_FILE)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        export.main(["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "c")])
    record = json.loads((model_dir / "export.json").read_text())
    assert record["parity"]["passed"] and record["input"] == {"name": "mfcc", "shape": [None, 500, 120],
                                                              "dtype": "float32"}
    assert record["front_end"]["kind"] == "mfcc" and record["parity"]["onnx"]["max_abs_diff"] <= 1e-4
    clip = sorted((data_dir / "Test").rglob("*.wav"))[0]
    labels = {}
    for backend in ("keras", "onnx", "tflite"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            import predict
            predict.main(["--file", str(clip), "--model-dir", str(model_dir), "--backend", backend, "--json"])
        labels[backend] = json.loads(out.getvalue())["label"]
    assert labels["onnx"] == labels["keras"] == labels["tflite"]


def test_the_mfcc_front_layer_is_the_front_end(lstm_attention_dir):
    from core.front_ends import front_end_of
    from core.saliency import Explainer, mfcc_front
    model = keras.saving.load_model(lstm_attention_dir / common.MODEL_FILE, safe_mode=True)
    front_end = front_end_of(json.loads((lstm_attention_dir / "config.json").read_text()))
    y = tone("moo", 2.0)
    z = common.clip_features(y, front_end.cfg)
    front = mfcc_front(common.log_mel(y, front_end.cfg), front_end.cfg, front_end.params)
    mfcc = front_end.features(y)
    np.testing.assert_allclose(front(z[None]).numpy()[0], mfcc, atol=2e-3 * np.abs(mfcc).max())
    explainer = Explainer(model, front=front)
    np.testing.assert_allclose(explainer.predict(z[None]), model.predict(mfcc[None], verbose=0), atol=1e-4)
    assert explainer.available("gradcam").startswith(f"model '{model.name}' reads MFCCs")
    weights = explainer.explain("attention", z, 0)
    n_real = common.n_real_frames(z)
    assert weights.shape == (n_real, 128) and weights[:, 0].sum() == pytest.approx(1.0, abs=1e-4)


def test_examining_commands_work_on_an_mfcc_model(lstm_attention_dir, data_dir, tmp_path):
    import pandas as pd

    import embeddings
    import explain
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.5))
    model = ["--model-dir", str(lstm_attention_dir)]
    explain.main([*model, "--file", str(clip), "--out", str(tmp_path / "ex"), "--lime-samples", "40",
                  "--shap-samples", "40", "--steps", "4"])
    metrics = pd.read_csv(tmp_path / "ex" / "metrics.csv")
    assert list(metrics.method.unique()) == ["saliency", "smoothgrad", "ig", "lime", "shap", "attention", "random"]
    with pytest.raises(SystemExit, match="gradcam: model .* reads MFCCs"):
        explain.main([*model, "--file", str(clip), "--methods", "gradcam"])
    cache = ["--cache-dir", str(tmp_path / "c")]
    check_quick_robustness([*model, *cache], tmp_path / "rob")
    embeddings.main([*model, *cache, "--out", str(tmp_path / "emb")])
    assert (pd.read_csv(tmp_path / "emb" / "embeddings.csv").split == "Test").sum() == len(
        list((data_dir / "Test").rglob("*.[wW][aA][vV]")))
