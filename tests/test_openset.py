"""Open-set scores (higher = more likely unknown) and their evaluation, on hand-worked examples."""
import numpy as np
import pytest

from core import openset


def test_max_probability_and_entropy_scores():
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_allclose(openset.max_probability_score(probs), [0.0, 0.5, 0.2])
    # -(0.2 ln 0.2 + 0.8 ln 0.8) = 0.500402
    np.testing.assert_allclose(openset.entropy_score(probs), [0.0, np.log(2), 0.500402], atol=1e-6)
    assert openset.entropy_score([[1 / 3] * 3])[0] == pytest.approx(np.log(3))


def test_energy_score():
    # logsumexp([0, ln 3]) = ln(1 + 3)
    np.testing.assert_allclose(openset.energy_score([[0.0, np.log(3)], [0.0, 0.0]]), [-np.log(4), -np.log(2)])
    # T = 2: -2 ln(e^0 + e^(ln 3 / 2)) = -2 ln(1 + sqrt 3)
    assert openset.energy_score([[0.0, np.log(3)]], 2.0)[0] == pytest.approx(-2 * np.log(1 + np.sqrt(3)))
    # on log-probabilities the energy is 0 for every row: it needs real logits
    np.testing.assert_allclose(openset.energy_score(np.log([[0.9, 0.1], [0.5, 0.5]])), [0.0, 0.0], atol=1e-12)


def test_mc_dropout_scores():
    samples = np.array([[[0.8, 0.2], [0.9, 0.1]],      # pass 1, clips 1 and 2
                        [[0.4, 0.6], [0.9, 0.1]]])     # pass 2
    msp, variance = openset.mc_dropout_scores(samples)
    # clip 1: mean [0.6, 0.4]; variance of (0.8, 0.4) and of (0.2, 0.6) is 0.04 each
    np.testing.assert_allclose(msp, [0.4, 0.1])
    np.testing.assert_allclose(variance, [0.04, 0.0], atol=1e-12)
    with pytest.raises(ValueError):
        openset.mc_dropout_scores(samples[0])


def test_class_centroids_are_unit_mean_directions():
    embeddings = np.array([[2.0, 0.0], [0.0, 3.0], [5.0, 5.0]])
    centroids = openset.class_centroids(embeddings, [0, 0, 1], n_classes=2)
    # class 0: mean of [1, 0] and [0, 1], renormalised; the norms 2 and 3 do not matter
    np.testing.assert_allclose(centroids, [[1 / np.sqrt(2)] * 2, [1 / np.sqrt(2)] * 2])
    with pytest.raises(ValueError):
        openset.class_centroids(embeddings, [0, 0, 0], n_classes=2)    # class 1 has no embedding


def test_cosine_centroid_score_and_nearest_centroid():
    centroids = np.array([[1.0, 0.0], [0.0, 2.0]])
    embeddings = np.array([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [-1.0, 1.0]])
    expected = [0.0, 1 - 1 / np.sqrt(2), 1.0, 1 - 1 / np.sqrt(2)]
    np.testing.assert_allclose(openset.cosine_centroid_score(embeddings, centroids), expected, atol=1e-12)
    index, distance = openset.nearest_centroid(embeddings, centroids)
    np.testing.assert_array_equal(index, [0, 0, 1, 1])       # the tie at [1, 1] goes to the first class
    np.testing.assert_allclose(distance, expected, atol=1e-12)


def test_mahalanobis_with_identity_precision_is_squared_euclidean():
    means = np.array([[0.0, 0.0], [3.0, 4.0]])
    x = np.array([[1.0, 1.0], [3.0, 3.0], [0.0, 0.0]])
    # [1,1]: 2 to the origin; [3,3]: 18 vs 1; [0,0]: 0
    np.testing.assert_allclose(openset.mahalanobis_score(x, means, np.eye(2)), [2.0, 1.0, 0.0])


def test_fit_mahalanobis_tied_covariance_by_hand():
    # class 0 around (1, 0), class 1 around (10, 1); centred: (-1,0) (1,0) (0,-1) (0,1) -> covariance 0.5 I
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
    means, precision = openset.fit_mahalanobis(x, [0, 0, 1, 1], n_classes=2, shrinkage=None)
    np.testing.assert_allclose(means, [[1.0, 0.0], [10.0, 1.0]])
    np.testing.assert_allclose(precision, 2 * np.eye(2), atol=1e-9)
    # (1, 1) is (0, 1) from the class-0 mean: 2 * 1^2
    np.testing.assert_allclose(openset.mahalanobis_score([[1.0, 1.0], [10.0, 1.0]], means, precision), [2.0, 0.0],
                               atol=1e-9)
    # an isotropic covariance is unchanged by shrinkage toward the identity's scale
    np.testing.assert_allclose(openset.fit_mahalanobis(x, [0, 0, 1, 1], 2, shrinkage=0.5)[1], 2 * np.eye(2),
                               atol=1e-9)
    with pytest.raises(ValueError):
        openset.fit_mahalanobis(x, [0, 0, 1, 1], 2, shrinkage="oas")


def test_fit_mahalanobis_ledoit_wolf_works_with_more_dimensions_than_clips():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 20))
    means, precision = openset.fit_mahalanobis(x, [0, 0, 0, 1, 1, 1], n_classes=2)
    assert means.shape == (2, 20) and precision.shape == (20, 20)
    np.testing.assert_allclose(precision, precision.T, atol=1e-8)
    assert np.all(np.linalg.eigvalsh(precision) > 0)            # the empirical covariance here has rank 4
    scores = openset.mahalanobis_score(np.vstack([means, means + 10]), means, precision)
    assert scores[0] == pytest.approx(0, abs=1e-9) and scores[1] == pytest.approx(0, abs=1e-9)
    assert np.all(scores[2:] > 1)


def test_knn_score_on_tiny_points():
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0]])   # normalised to (1,0) (0,1) (-1,0)
    queries = np.array([[2.0, 0.0], [0.0, -5.0]])
    # sorted distances from (1,0): 0, sqrt 2, 2; from (0,-1): sqrt 2, sqrt 2 (to (1,0) and (-1,0)), 2
    np.testing.assert_allclose(openset.knn_score(queries, bank, k=1), [0.0, np.sqrt(2)], atol=1e-7)
    np.testing.assert_allclose(openset.knn_score(queries, bank, k=2), [np.sqrt(2), np.sqrt(2)])
    np.testing.assert_allclose(openset.knn_score(queries, bank, k=3), [2.0, 2.0])
    with pytest.raises(ValueError):
        openset.knn_score(queries, bank, k=4)


def test_knn_score_chunks_agree_with_brute_force():
    rng = np.random.default_rng(1)
    bank, queries = rng.standard_normal((50, 8)), rng.standard_normal((23, 8))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    brute = np.sort(np.linalg.norm(unit(queries)[:, None] - unit(bank)[None], axis=2), axis=1)[:, 4]
    np.testing.assert_allclose(openset.knn_score(queries, bank, k=5, chunk_size=4), brute, atol=1e-7)
    np.testing.assert_allclose(openset.knn_score(queries, bank, k=5), brute, atol=1e-7)


def test_auroc_and_aupr():
    assert openset.auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert openset.auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert openset.auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    # out (0.4, 0.8) vs in (0.2, 0.6): 3 of 4 pairs ordered right
    assert openset.auroc([0.2, 0.6], [0.4, 0.8]) == pytest.approx(0.75)
    # ranked 0.8 out, 0.6 in, 0.4 out: precision 1 at recall 1/2, 2/3 at recall 1 -> 0.5 + 0.5 * 2/3
    assert openset.aupr([0.2, 0.6], [0.4, 0.8]) == pytest.approx(5 / 6)
    assert openset.aupr([0.1, 0.2], [0.8, 0.9]) == 1.0
    with pytest.raises(ValueError):
        openset.auroc([], [0.1])


def test_rejection_threshold_keeps_exactly_the_share():
    scores = np.arange(1, 21) / 100                       # 0.01 .. 0.20
    for keep, expected in ((0.95, 0.19), (0.5, 0.10), (1.0, 0.20), (0.01, 0.01)):
        t = openset.rejection_threshold(scores, keep)
        assert t == pytest.approx(expected)
    assert np.mean(scores <= openset.rejection_threshold(scores, 0.95)) == 0.95
    # 0.07 * 100 is 7.000000000000001 in floating point; still 7 of 100 accepted, not 8
    assert openset.rejection_threshold(np.arange(100), 0.07) == 6
    # ties at the threshold are all accepted: at least, not exactly, the share
    assert openset.rejection_threshold([1, 1, 1, 2], 0.5) == 1
    with pytest.raises(ValueError):
        openset.rejection_threshold(scores, 0.0)


def test_fpr_at_95_tpr_crafted():
    in_scores = np.arange(1, 21) / 100                    # threshold keeping 95 %: 0.19
    out_scores = [0.05, 0.19, 0.195, 0.5, 0.9]            # 0.05 and 0.19 (a tie: accepted) slip through
    assert openset.fpr_at_tpr(in_scores, out_scores) == pytest.approx(0.4)
    assert openset.fpr_at_tpr(in_scores, [0.5, 0.9]) == 0.0
    assert openset.fpr_at_tpr(in_scores, out_scores, tpr=1.0) == pytest.approx(0.6)   # threshold 0.20


def test_accuracy_after_rejection():
    pred, labels = [0, 1, 1, 0], [0, 1, 0, 0]
    scores = [0.1, 0.9, 0.2, 0.3]
    # accepted: clips 1, 3, 4 (clip 2 is right but rejected; clip 3 is accepted but wrong)
    accuracy, rejected = openset.accuracy_after_rejection(pred, labels, scores, threshold=0.5)
    assert (accuracy, rejected) == (0.5, 0.25)
    assert openset.accuracy_after_rejection(pred, labels, scores, threshold=1.0) == (0.75, 0.0)


def test_scores_table_names_the_score_functions():
    assert set(openset.SCORES) == {"msp", "entropy", "energy", "mc_msp", "mc_variance", "cosine", "mahalanobis",
                                   "knn"}
    assert all(isinstance(text, str) and len(text) > 10 for text in openset.SCORES.values())
