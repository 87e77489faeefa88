"""The custom layers' registered names: saved models refer to them, so they must never change."""
import pytest

keras = pytest.importorskip("keras")
from core import layers  # noqa: E402  (after the skip: it imports Keras)

# What every model trained so far has in its config.json (as "registered_name").
SAVED_NAMES = {"animal_sounds>FrameMask", "animal_sounds>MaskedMaxPooling1D", "animal_sounds>MaskedMeanMaxPooling",
               "animal_sounds>PositionEmbedding", "animal_sounds>MaskedMeanPooling", "animal_sounds>PrototypeHead",
               "animal_sounds>MaskedAttentionPooling", "animal_sounds>SegmentPooling",
               "animal_sounds>BlockUnitNormalization"}


def test_registered_names_are_the_ones_saved_models_use():
    assert {keras.saving.get_registered_name(c) for c in layers.REGISTERED_LAYERS} == SAVED_NAMES
    for name in SAVED_NAMES:
        assert keras.saving.get_registered_object(name).__name__ == name.split(">")[1]


def test_a_saved_model_reloads_by_registered_name(tmp_path):
    """A model using the masked layers round-trips through a .keras file in safe mode."""
    import numpy as np
    x = keras.Input((6, 3))
    mask = layers.FrameMask()(x)
    pooled, mask = layers.MaskedMaxPooling1D()([x, mask])
    model = keras.Model(x, layers.MaskedMeanMaxPooling()([pooled, mask]))
    model.save(tmp_path / "m.keras")
    batch = np.zeros((1, 6, 3), np.float32)
    batch[0, :3] = [[1, -2, 3], [4, 5, -6], [0.5, 0, 0]]
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict_on_batch(batch), model.predict_on_batch(batch))
    # real frames pool pairwise to [4, 5, 3] and [0.5, 0, 0]: mean [2.25, 2.5, 1.5], max [4, 5, 3]
    np.testing.assert_allclose(model.predict_on_batch(batch)[0], [2.25, 2.5, 1.5, 4, 5, 3])


def test_block_unit_normalization_scales_each_part_to_unit_norm(tmp_path):
    import numpy as np
    x = keras.Input((5,))
    model = keras.Model(x, layers.BlockUnitNormalization([2, 3])(x))
    model.save(tmp_path / "m.keras")
    batch = np.array([[3, 4, 0, 0, 2], [0, 0, 1, 2, 2]], np.float32)
    expected = [[0.6, 0.8, 0, 0, 1], [0, 0, 1 / 3, 2 / 3, 2 / 3]]   # an all-zero part stays zero
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(batch), expected, atol=1e-6)


def test_frozen_standardisation_standardises_features_of_small_variance(tmp_path):
    """Keras' default epsilon (1e-3) would leave features of variance ~1e-4 at a third of their spread."""
    import numpy as np
    rng = np.random.default_rng(0)
    frames = rng.normal(0.03, 0.01, (200, 4)).astype(np.float32)
    frames[:, 3] = 0.5   # a constant feature: centred, left unscaled
    x = keras.Input((4,))
    model = keras.Model(x, layers.frozen_standardisation(x, frames))
    model.save(tmp_path / "m.keras")
    out = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True).predict_on_batch(frames)
    np.testing.assert_allclose(out[:, :3].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out[:, :3].std(axis=0), 1, rtol=1e-3)
    np.testing.assert_allclose(out[:, 3], 0, atol=1e-6)
    probe = np.array([[0.05, 0.03, 0.01, 1.5]], np.float32)   # by hand: (v - mean) / std, the constant one minus 0.5
    expected = (probe - frames.mean(axis=0)) / np.where(frames.std(axis=0) > 0, frames.std(axis=0), 1.0)
    np.testing.assert_allclose(model.predict_on_batch(probe), expected, rtol=1e-4, atol=1e-5)
