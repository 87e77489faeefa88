"""Embedding scores against hand-computed values; embeddings.py end to end."""
import numpy as np
import pandas as pd
import pytest

from core import embeddings


def test_centroids_and_distances_by_hand():
    z = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0], [4.0, 0.0]])
    y = np.array([0, 0, 1, 1, 0])
    centres = embeddings.centroids(z[:4], y[:4], 3)
    np.testing.assert_allclose(centres[:2], [[1.0, 0.0], [10.0, 2.0]])
    assert np.isnan(centres[2]).all()                          # a class without clips
    own, other, nearest = embeddings.centroid_distances(z, y, centres)
    np.testing.assert_allclose(own, [1.0, 1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(other, [np.hypot(10, 2), np.hypot(8, 2), 9.0, np.hypot(9, 4), np.hypot(6, 2)])
    np.testing.assert_array_equal(nearest, [0, 0, 1, 1, 0])


def blobs(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    y = np.repeat(np.arange(3), n_per_class)
    return centres[y] + rng.normal(0, 0.5, (len(y), 3)), y


def test_separated_classes_score_perfectly_and_shuffled_labels_do_not():
    z, y = blobs(20, 0)
    assert embeddings.cluster_scores(z, y, 3) == {"kmeans_nmi": pytest.approx(1.0), "kmeans_ari": pytest.approx(1.0)}
    test_z, test_y = blobs(5, 1)
    assert embeddings.probe_scores(z, y, test_z, test_y) == {"probe_accuracy": 1.0, "probe_macro_f1": 1.0}
    shuffled = np.random.default_rng(2).permutation(y)
    assert embeddings.cluster_scores(z, shuffled, 3)["kmeans_ari"] < 0.2


def test_tsne_keeps_separated_classes_apart():
    z, y = blobs(15, 3)
    points = embeddings.tsne_2d(np.hstack([z, np.zeros((len(z), 5))]))
    assert points.shape == (45, 2)
    centres = embeddings.centroids(points, y, 3)
    own, other, _ = embeddings.centroid_distances(points, y, centres)
    assert np.all(own < other)


def test_embeddings_command(tmp_path, trained_model_dir, data_dir):
    import embeddings as command
    out = tmp_path / "emb"
    command.main(["--model-dir", str(trained_model_dir), "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    table = pd.read_csv(out / "embeddings.csv")
    n_train = len(list((data_dir / "Training").rglob("*.[wW][aA][vV]")))
    n_test = len(list((data_dir / "Test").rglob("*.[wW][aA][vV]")))
    assert (table.split == "Training").sum() == n_train and (table.split == "Test").sum() == n_test
    metrics = pd.read_csv(out / "embedding_metrics.csv").set_index(["metric", "split"]).value
    for split in ("Training", "Test"):
        part = table[table.split == split]
        assert metrics["nearest_centroid_accuracy", split] == pytest.approx((part.nearest_centroid == part.label).mean())
        assert metrics["model_accuracy", split] == pytest.approx((part.predicted == part.label).mean())
        assert 0 <= metrics["kmeans_nmi", split] <= 1
    closer = table.own_centroid_distance <= table.nearest_other_centroid_distance
    assert (closer == (table.nearest_centroid == table.label)).all()
    assert {"probe_accuracy", "probe_macro_f1"} <= set(metrics.index.get_level_values(0))
    assert table[["tsne_x", "tsne_y"]].notna().all().all()
    for name in ("tsne.png", "centroid_distances.png"):
        assert (out / name).stat().st_size > 1000
