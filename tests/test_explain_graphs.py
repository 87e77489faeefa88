"""The explanation graphs (ONNX) give Keras' maps: the main job's architecture, real padding, odd pooled lengths."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
from core import explain_graphs, saliency

FRAMES, MELS = 45, 16            # 45 -> 23 -> 12 frames: the pooling pads odd lengths, as on 500-frame windows


@pytest.fixture(scope="module")
def enhance_like(tmp_path_factory):
    """enhance.py's network, small and untrained (random weights, BatchNorm moved off identity), and its graphs."""
    import enhance
    keras.utils.set_random_seed(3)
    model = enhance.build_model(FRAMES, MELS, 3, widths=(4, 6), dropout=0.3)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.1, mean + rng.normal(0, 0.1, mean.shape),
                               var * rng.uniform(0.5, 2.0, var.shape)])
    directory = tmp_path_factory.mktemp("graphs")
    record = explain_graphs.export_graphs(model, directory / explain_graphs.GRAPHS_DIR)
    return model, directory, record


def windows(n_real: tuple) -> np.ndarray:
    """Windows with that many real frames, then zero padding (as clip_features makes them)."""
    rng = np.random.default_rng(1)
    x = np.zeros((len(n_real), FRAMES, MELS), np.float32)
    for i, n in enumerate(n_real):
        x[i, :n] = rng.standard_normal((n, MELS))
    return x


def test_graphs_serve_the_cnn_methods(enhance_like):
    _, directory, record = enhance_like
    assert record["methods"] == ["saliency", "smoothgrad", "ig", "gradcam", "lrp", "lime", "shap"]
    assert record["keras_only"] == []
    assert explain_graphs.has_graphs(directory) and not explain_graphs.has_graphs(directory / "nowhere")
    reason = explain_graphs.GraphExplainer(directory).available("attention")
    assert "attention" in reason and "\n" not in reason


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "ig", "gradcam", "lrp"])
def test_graph_maps_equal_keras_maps(enhance_like, method):
    model, directory, _ = enhance_like
    keras_side, graph_side = saliency.Explainer(model), explain_graphs.GraphExplainer(directory)
    for x, c in zip(windows((45, 30, 7)), (0, 1, 2)):
        expected = keras_side.explain(method, x, c)
        got = graph_side.explain(method, x, c)
        assert got.shape == expected.shape and np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_graph_gradients_and_probabilities_for_any_batch(enhance_like):
    model, directory, _ = enhance_like
    graph_side = explain_graphs.GraphExplainer(directory)
    x = windows((45, 12, 33) * 12)                  # 36 windows: a full batch of 32 and a padded one
    np.testing.assert_allclose(graph_side.probabilities(x), model.predict(x, verbose=0), atol=1e-6)
    expected = saliency.input_gradients(saliency.logits_model(model))(x, 2)
    np.testing.assert_allclose(graph_side.gradients(x, 2), expected, rtol=1e-4, atol=1e-6)
    assert np.array_equal(graph_side.predict(x[:2, :20]), graph_side.probabilities(
        np.concatenate([x[:2, :20], np.zeros((2, FRAMES - 20, MELS), np.float32)], axis=1)))


def test_a_model_without_convolutions_gets_the_gradient_methods_only(tmp_path):
    inputs = keras.Input((FRAMES, MELS))
    h = keras.layers.LayerNormalization()(keras.layers.Dense(8, activation="relu")(inputs))   # RsqrtGrad
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h)))
    record = explain_graphs.export_graphs(model, tmp_path / "explain")
    assert record["methods"] == ["saliency", "smoothgrad", "ig", "lime", "shap"] and record["gradcam_layer"] is None
    x = windows((30,))[0]
    np.testing.assert_allclose(explain_graphs.GraphExplainer(tmp_path).explain("ig", x, 1),
                               saliency.Explainer(model).explain("ig", x, 1), rtol=1e-4, atol=1e-6)
    with pytest.raises(saliency.MethodUnavailable):
        explain_graphs.GraphExplainer(tmp_path).explain("gradcam", x, 1)


def test_a_recurrent_model_is_refused_in_one_line(tmp_path):
    inputs = keras.Input((FRAMES, MELS))
    h = keras.layers.Bidirectional(keras.layers.GRU(4))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    with pytest.raises(explain_graphs.GraphsUnavailable, match="recurrent layer .*: tf2onnx cannot convert"):
        explain_graphs.export_graphs(model, tmp_path / "explain")
    assert not (tmp_path / "explain").exists()


def test_overlapping_max_pools_route_gradients_as_tensorflow_does(tmp_path):
    """AlexNet's 3/2 pooling: windows overlap, so a maximum shared by two windows gets both gradients."""
    inputs = keras.Input((FRAMES, MELS))
    h = keras.layers.Reshape((FRAMES, MELS, 1))(inputs)
    h = keras.layers.MaxPooling2D(3, strides=2, padding="same")(keras.layers.Conv2D(4, 3, activation="relu")(h))
    h = keras.layers.MaxPooling2D(3, strides=2)(keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(h)))
    explain_graphs.export_graphs(model, tmp_path / "explain")
    keras_side, graph_side = saliency.Explainer(model), explain_graphs.GraphExplainer(tmp_path)
    for method in ("saliency", "gradcam", "lrp"):
        expected = keras_side.explain(method, windows((45,))[0], 2)
        np.testing.assert_allclose(graph_side.explain(method, windows((45,))[0], 2), expected, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected).max())
