"""Attribution methods on models whose evidence is known, and explain.py end to end.

The synthetic check: class 1 is carried by a tone (a bright block) in a known
time-frequency region of a (48, 32) input; class 0 is background only.
"""
import numpy as np
import pytest
from conftest import tone, write_wav

keras = pytest.importorskip("keras")
from core import attribution_metrics as am
from core import maps, saliency

tf = pytest.importorskip("tensorflow")

FRAMES, MELS = 48, 32
REGION = (slice(16, 32), slice(8, 16))          # 128 of 1536 bins: 8.3 % of the input
GRADIENT_METHODS = ("saliency", "smoothgrad", "ig", "gradcam", "lrp")


def tone_inputs(n: int, seed: int, label=None):
    """(x, y): background N(0, 0.2); class 1 adds 2.0 inside REGION."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.2, (n, FRAMES, MELS)).astype(np.float32)
    y = rng.integers(0, 2, n) if label is None else np.full(n, label)
    x[y == 1, REGION[0], REGION[1]] += 2.0
    return x, y


def tiny_cnn(convolutions):
    """(48, 32) -> image -> the given Conv2D layers (a 2x2 max pool after the first) -> global mean -> 2 classes."""
    layers = keras.layers
    inputs = keras.Input((FRAMES, MELS))
    h = layers.Reshape((FRAMES, MELS, 1))(inputs)
    for i, conv in enumerate(convolutions):
        h = conv(h) if i else layers.MaxPooling2D(2)(conv(h))
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(h), name="tiny_cnn")


@pytest.fixture(scope="module")
def trained_cnn():
    """A 2D CNN trained 2 epochs on the tone task (accuracy 1.0, p(class 1) ~0.75: not saturated)."""
    keras.utils.set_random_seed(0)
    x, y = tone_inputs(256, 0)
    model = tiny_cnn([keras.layers.Conv2D(8, 3, padding="same", activation="relu") for _ in range(2)])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return model


def detector_cnn():
    """A constructed tone detector: 3x3 mean filter with threshold 1 (fires on the tone only), then GAP and a logit."""
    model = tiny_cnn([keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="conv")])
    model.get_layer("conv").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-1.0], np.float32)])
    model.layers[-1].set_weights([np.array([[0.0, 60.0]], np.float32), np.array([0.0, -2.5], np.float32)])
    return model


def mass_inside(saliency_map: np.ndarray) -> float:
    a = np.abs(saliency_map)
    return float(a[REGION].sum() / a.sum())


def test_the_synthetic_models_solve_the_task(trained_cnn):
    x, y = tone_inputs(64, 1)
    for model in (trained_cnn, detector_cnn()):
        assert (model.predict(x, verbose=0).argmax(axis=1) == y).mean() == 1.0


def test_methods_put_their_mass_on_the_tone(trained_cnn):
    x, _ = tone_inputs(3, 2, label=1)
    # the constructed detector's evidence is local, so every method must find it, saliency included
    detector = saliency.Explainer(detector_cnn())
    for method in ("saliency", "ig", "gradcam", "lrp"):
        assert min(mass_inside(detector.explain(method, xi, 1)) for xi in x) > 0.8, method
    # the trained CNN is close to a brightness meter, so its gradient is everywhere (saliency ~0.1):
    # the methods that weigh the input by what it holds still find the tone
    trained = saliency.Explainer(trained_cnn)
    for method in ("ig", "gradcam", "lrp"):
        assert min(mass_inside(trained.explain(method, xi, 1)) for xi in x) > 0.5, method


def test_gradient_methods_beat_the_random_mask(trained_cnn):
    x, _ = tone_inputs(4, 3, label=1)
    explainer = saliency.Explainer(trained_cnn)
    for method in GRADIENT_METHODS:
        maps = np.stack([explainer.explain(method, xi, 1) for xi in x])
        table = am.metrics_table(explainer.predict, x, maps, classes=1, random_seed=0)
        assert table["binary"]["AD"] < table["random"]["AD"] - 10, method
        assert table["binary"]["deletion_auc"] < table["random"]["deletion_auc"] - 0.05, method


def linear_model(bias: bool):
    inputs = keras.Input((3, 2))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", use_bias=bias)(keras.layers.Flatten()(inputs)))


def test_lrp_by_hand_on_a_linear_convolutional_model():
    # logit_c = sum_t sum_m x[t, m] k[m] w[t, c] (zero bias): each term is exactly its input's relevance
    inputs = keras.Input((3, 2))
    h = keras.layers.Conv1D(1, 1, use_bias=False)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(h)))
    k = np.array([2.0, -1.0], np.float32)
    w = np.array([[1.0, 0.5], [0.0, -1.0], [3.0, 2.0]], np.float32)
    model.layers[1].set_weights([k.reshape(1, 2, 1)])
    model.layers[-1].set_weights([w, np.zeros(2, np.float32)])
    x = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]], np.float32)
    expected = x * k[None, :] * w[:, [1]]          # [[2, 1], [-1, 3], [8, -4]]
    np.testing.assert_allclose(saliency.lrp_epsilon(model, x, 1, epsilon=1e-9), expected, rtol=1e-5)


def test_lrp_conserves_the_logit_without_biases():
    layers = keras.layers
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 4))
    h = layers.Conv1D(5, 3, activation="relu", use_bias=False)(inputs)
    h = layers.MaxPooling1D(2)(h)
    h = layers.Add()([layers.Dense(5, use_bias=False)(h), h])
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", bias_initializer="zeros")(layers.Flatten()(h)))
    x = np.abs(np.random.default_rng(1).normal(size=(12, 4))).astype(np.float32)
    logits = saliency.logits_model(model)(x[None]).numpy()[0]
    c = int(np.argmax(logits))
    relevance = saliency.lrp_epsilon(model, x, c, epsilon=1e-9)
    assert relevance.shape == (12, 4)
    assert relevance.sum() == pytest.approx(logits[c], rel=1e-3)


def test_integrated_gradients_completeness(trained_cnn):
    x, _ = tone_inputs(1, 4, label=1)
    scores = saliency.logits_model(trained_cnn)
    attribution = maps.integrated_gradients(saliency.input_gradients(scores), x[0], 1, steps=128)
    gap = scores(x).numpy()[0, 1] - scores(np.zeros_like(x)).numpy()[0, 1]
    assert attribution.sum() == pytest.approx(gap, rel=0.02)


@pytest.mark.parametrize("compiled", [True, False])
def test_input_gradients_are_the_tapes_for_any_batch_and_class(trained_cnn, compiled):
    scores = saliency.logits_model(trained_cnn)
    gradients = saliency.input_gradients(scores, compiled)
    for n, c in ((1, 0), (5, 1), (3, 0)):
        x = tf.constant(tone_inputs(n, n, label=1)[0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(scores(x)[:, c])
        np.testing.assert_allclose(gradients(x.numpy(), c), tape.gradient(score, x).numpy(), rtol=1e-5, atol=1e-7)


def test_cam_to_input_maps_time_and_mel_axes():
    # 1D: a map over time, repeated across the mel bands
    out = maps.cam_to_input(np.array([0.0, 1.0]), 4, 3)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.25, 0.75, 1.0])   # cell centres, clamped at the ends
    np.testing.assert_allclose(out, np.repeat(out[:, :1], 3, axis=1))
    # 2D as (mels, frames), like AlexNet-Mel's image: values vary along W, which must become time
    cam = np.tile(np.arange(4.0), (2, 1))                       # (H=2, W=4), window (frames=8, mels=4)
    out = maps.cam_to_input(cam, 8, 4)
    assert out.shape == (8, 4)
    np.testing.assert_allclose(out, np.repeat(out[:, :1], 4, axis=1))
    assert np.all(np.diff(out[:, 0]) >= 0) and out[-1, 0] == 3.0 and out[0, 0] == 0.0
    # 2D as (frames, mels): kept
    np.testing.assert_allclose(maps.cam_to_input(cam.T, 8, 4)[:, 0], out[:, 0])


def test_rollout_by_hand():
    both = np.array([True, True])
    np.testing.assert_allclose(saliency.rollout([np.eye(2)], both), [0.5, 0.5])
    np.testing.assert_allclose(saliency.rollout([np.eye(2)], np.array([True, False])), [1.0, 0.0])
    # everyone attends token 0: 0.5 A + 0.5 I = [[1, 0], [.5, .5]]; two layers: [[1, 0], [.75, .25]]
    to_first = np.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(saliency.rollout([to_first, to_first], both), [0.875, 0.125])


@pytest.mark.filterwarnings("ignore:The set_.* function will be deprecated:PendingDeprecationWarning")  # shap's import
def test_patches_lime_and_shap_on_an_additive_model():
    segments = maps.patch_segments((4, 4), (2, 2))
    np.testing.assert_array_equal(segments, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    weights = np.array([[0.05, 0.05, 0.0, 0.0], [0.05, 0.05, 0.0, 0.0],
                        [0.10, 0.10, -0.02, -0.02], [0.10, 0.10, -0.02, -0.02]])

    def predict(xs):                              # p_1 = 0.3 + sum(w * x): additive in the patches
        p1 = 0.3 + np.sum(np.asarray(xs) * weights, axis=(1, 2))
        return np.stack([1 - p1, p1], axis=1)

    x = np.ones((4, 4), np.float32)
    shap_values = maps.shap_map(predict, x, 1, patch=(2, 2), samples=64)
    # Shapley values of an additive game are its terms: 0.2, 0, 0.4, -0.08 per patch
    np.testing.assert_allclose(shap_values, np.array([0.2, 0.0, 0.4, -0.08])[segments], atol=1e-6)
    lime_values = maps.lime_map(predict, x, 1, patch=(2, 2), samples=200)
    patch_weights = lime_values[[0, 0, 2, 2], [0, 2, 0, 2]]
    assert list(np.argsort(patch_weights)) == [3, 1, 0, 2]


def test_methods_a_model_lacks_are_refused_in_one_line(trained_cnn):
    dense = linear_model(bias=True)
    explainer = saliency.Explainer(dense)
    for method in ("gradcam", "lrp"):
        reason = explainer.available(method)
        assert "no convolution" in reason and "\n" not in reason
        with pytest.raises(saliency.MethodUnavailable):
            explainer.explain(method, np.ones((3, 2), np.float32), 0)
    assert "no MultiHeadAttention" in saliency.Explainer(trained_cnn).available("attention")
    assert "unknown method" in explainer.available("occlusion")


# ---------------------------------------------------------------- explain.py


def run_explain(tmp_path, *argv):
    import explain
    return explain.main([*map(str, argv)])


FAST = ("--methods", "saliency", "ig", "gradcam", "lrp", "lime", "shap", "--lime-samples", "40",
        "--shap-samples", "40", "--steps", "4")


def test_explain_file_writes_maps_sounds_metrics_and_page(tmp_path, trained_model_dir):
    import pandas as pd
    import soundfile as sf
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.5))
    out = tmp_path / "out"
    run_explain(tmp_path, "--model-dir", trained_model_dir, "--file", clip, "--out", out, *FAST)
    methods = ["saliency", "ig", "gradcam", "lrp", "lime", "shap", "random"]
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.method.unique()) == methods and len(metrics) == 2 * len(methods)
    for column in ("AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "deletion_auc", "insertion_auc"):
        assert metrics[column].notna().all(), column
    binary = metrics[metrics["mask"] == "binary"]
    np.testing.assert_allclose(binary.mask_mean, 0.2, atol=0.01)
    original, sr = sf.read(out / "original.wav")
    assert sr == 16000 and len(original) == int(1.5 * 16000)
    for m in methods:
        assert (out / f"{m}.png").stat().st_size > 1000
        kept, _ = sf.read(out / f"{m}_binary.wav")
        assert len(kept) == len(original) and np.sum(kept ** 2) < np.sum(original ** 2)
    saved = np.load(out / "maps.npz", allow_pickle=False)
    assert set(saved.files) == set(methods) and saved["ig"].shape[1] == 128
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == len(methods) * 2 * 5
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(methods) + 2 and page.count("<audio") == 1 + 2 * len(methods)


def test_explain_refuses_what_the_model_cannot_do(tmp_path, trained_model_dir, capsys):
    clip = write_wav(tmp_path / "moo.wav", tone("moo", 1.0))
    with pytest.raises(SystemExit, match="attention: model .* has no MultiHeadAttention or attention pooling layer"):
        run_explain(tmp_path, "--model-dir", trained_model_dir, "--file", clip, "--methods", "attention")
    with pytest.raises(SystemExit, match=r"error: .*empty\.wav.*empty file"):
        (tmp_path / "empty.wav").write_bytes(b"")
        run_explain(tmp_path, "--model-dir", trained_model_dir, "--file", tmp_path / "empty.wav", *FAST)
    with pytest.raises(SystemExit, match="--target whale: not a class"):
        run_explain(tmp_path, "--model-dir", trained_model_dir, "--file", clip, "--target", "whale")


def test_explain_dir_summarises_and_skips_bad_files(tmp_path, trained_model_dir, capsys):
    import pandas as pd
    folder = tmp_path / "recordings"
    write_wav(folder / "a" / "moo.wav", tone("moo", 1.0))
    write_wav(folder / "chirp.wav", tone("chirp", 1.0))
    (folder / "broken.wav").write_bytes(b"not audio" * 100)
    out = tmp_path / "out"
    run_explain(tmp_path, "--model-dir", trained_model_dir, "--dir", folder, "--out", out,
                "--methods", "saliency", "ig", "--steps", "4")
    assert "broken.wav" in capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.method) == ["saliency", "saliency", "ig", "ig", "random", "random"]
    assert (summary.files == 2).all()
    per_file = pd.read_csv(out / "all_metrics.csv")
    ig_ad = per_file[(per_file.method == "ig") & (per_file["mask"] == "binary")].AD.mean()
    assert summary[(summary.method == "ig") & (summary["mask"] == "binary")].AD.item() == pytest.approx(ig_ad)
    assert (out / "a__moo" / "report.html").is_file() and (out / "summary.html").is_file()
