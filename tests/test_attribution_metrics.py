"""Attribution metrics against hand-computed values on a 2x2 input and a linear toy model."""
import numpy as np
import pytest

from core import attribution_metrics as am

# Toy "model": s = 0.5 + sum(W * x); probabilities [s, 1 - s] (valid for the inputs used here).
W = np.array([[0.2, 0.1], [-0.1, 0.0]], np.float32)


def toy_predict(batch):
    batch = np.asarray(batch, np.float64)
    s = 0.5 + np.sum(batch * W, axis=(1, 2))
    return np.stack([s, 1.0 - s], axis=1)


X = np.ones((2, 2), np.float32)          # p(x) = [0.7, 0.3]: class 0 explained
M_A = np.array([[1, 1], [0, 0]], np.float32)  # keep: s = 0.8; remove: s = 0.4
M_B = np.array([[0, 0], [1, 0]], np.float32)  # keep: s = 0.4; remove: s = 0.8
XB = np.stack([X, X])
MB = np.stack([M_A, M_B])


def test_toy_model_by_hand():
    np.testing.assert_allclose(toy_predict(XB[:1]), [[0.7, 0.3]])
    np.testing.assert_allclose(toy_predict(X * MB)[:, 0], [0.8, 0.4])
    np.testing.assert_allclose(toy_predict(X * (1 - MB))[:, 0], [0.4, 0.8])


def test_average_increase():
    # A: 0.7 < 0.8 -> 1; B: 0.7 < 0.4 -> 0
    assert am.average_increase(toy_predict, XB, MB) == pytest.approx(50.0)


def test_average_drop():
    # A: 0; B: (0.7 - 0.4) / 0.7 = 3/7
    assert am.average_drop(toy_predict, XB, MB) == pytest.approx(100 * (3 / 7) / 2, rel=1e-6)


def test_average_gain():
    # A: (0.8 - 0.7) / (1 - 0.7) = 1/3; B: 0
    assert am.average_gain(toy_predict, XB, MB) == pytest.approx(100 * (1 / 3) / 2, rel=1e-6)


def test_faithfulness_removes_the_mask_content():
    # A: 0.7 - 0.4 = 0.3; B: 0.7 - 0.8 = -0.1
    assert am.faithfulness(toy_predict, XB, MB) == pytest.approx(0.1)


def test_input_fidelity():
    # A: masked-in probs [0.8, 0.2] -> class 0 == 0; B: [0.4, 0.6] -> class 1 != 0
    assert am.input_fidelity(toy_predict, XB, MB) == pytest.approx(0.5)


def test_single_input_and_explicit_class():
    assert am.average_drop(toy_predict, X, M_B) == pytest.approx(100 * 3 / 7, rel=1e-6)
    # explaining class 1 instead: p1(x) = 0.3, p1(x * M_B) = 0.6 -> increase, gain (0.3 / 0.7)
    assert am.average_increase(toy_predict, X, M_B, classes=1) == pytest.approx(100.0)
    assert am.average_gain(toy_predict, X, M_B, classes=[1]) == pytest.approx(100 * 0.3 / 0.7, rel=1e-6)


def test_baseline_fills_removed_bins():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    m = np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)
    np.testing.assert_allclose(am.apply_mask(x, m), [[1, 0], [1.5, 0]])
    np.testing.assert_allclose(am.apply_mask(x, m, baseline=-1.0), [[1, -1], [1, -1]])
    # removing everything with baseline 0 gives s = 0.5 -> FF = 0.7 - 0.5
    assert am.faithfulness(toy_predict, X, np.ones_like(X)) == pytest.approx(0.2)


def test_binary_mask_top_percent_and_ties():
    s = np.array([[0.1, 0.9], [0.5, -2.0]])
    np.testing.assert_array_equal(am.binary_mask(s, 25), [[0, 1], [0, 0]])
    np.testing.assert_array_equal(am.binary_mask(s, 50), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(am.binary_mask(s, 0), np.zeros((2, 2)))
    np.testing.assert_array_equal(am.binary_mask(s, 100), np.ones((2, 2)))
    # ties: lowest flat index first, the same every call
    flat = np.zeros((2, 2))
    np.testing.assert_array_equal(am.binary_mask(flat, 50), [[1, 1], [0, 0]])
    big = np.random.default_rng(0).integers(0, 3, (50, 16)).astype(float)
    m = am.binary_mask(big, 10)
    assert m.sum() == 80 and m.dtype == np.float32
    np.testing.assert_array_equal(m, am.binary_mask(big, 10))
    with pytest.raises(ValueError):
        am.binary_mask(s, 120)
    with pytest.raises(ValueError):
        am.binary_mask(np.array([[np.nan, 1.0]]), 50)


def test_soft_mask_clips_negatives_then_min_max():
    s = np.array([[-1.0, 0.0], [1.0, 3.0]])
    np.testing.assert_allclose(am.soft_mask(s), [[0, 0], [1 / 3, 1]], rtol=1e-6)
    np.testing.assert_allclose(am.soft_mask(np.array([[1.0, 2.0], [3.0, 5.0]])), [[0, 0.25], [0.5, 1]])
    np.testing.assert_array_equal(am.soft_mask(np.full((2, 3), 4.0)), np.zeros((2, 3)))
    np.testing.assert_array_equal(am.soft_mask(-np.ones((2, 2))), np.zeros((2, 2)))


def test_random_mask_has_the_same_share():
    rng = np.random.default_rng(1)
    for pct in (0, 5, 20, 50, 100):
        m = am.random_mask((500, 128), pct, rng)
        assert m.shape == (500, 128)
        assert m.sum() == am.binary_mask(np.zeros((500, 128)), pct).sum() == round(500 * 128 * pct / 100)
    a, b = am.random_mask((10, 10), 30, 7), am.random_mask((10, 10), 30, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, am.random_mask((10, 10), 30, 8))


def test_sparseness_gini():
    assert am.sparseness(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)
    assert am.sparseness(np.array([[0, 0], [0, -1.0]])) == pytest.approx(0.75)  # absolute value
    assert am.sparseness(np.full((4, 4), 0.3)) == pytest.approx(0.0, abs=1e-12)
    # [1, 2, 3]: (-2*1 + 0*2 + 2*3) / (3 * 6) = 4/18
    assert am.sparseness(np.array([3.0, 1.0, 2.0])) == pytest.approx(4 / 18)
    assert am.sparseness(np.zeros(5)) == 0.0


def test_complexity_entropy():
    assert am.complexity(np.ones((4, 8))) == pytest.approx(np.log(32))
    assert am.complexity(np.array([0, 0, 5.0, 0])) == pytest.approx(0.0)
    assert am.complexity(np.array([1.0, -1.0, 0.0])) == pytest.approx(np.log(2))
    assert am.complexity(np.zeros(3)) == 0.0


S = np.array([[0.9, 0.1], [0.5, 0.3]])   # rank: (0,0), (1,0), (1,1), (0,1)


def test_deletion_curve_by_hand():
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return toy_predict(batch)

    f, p = am.deletion_curve(counting, X, S, c=0, steps=4)
    np.testing.assert_allclose(f, [0, 0.25, 0.5, 0.75, 1.0])
    # remove (0,0): -0.2; then (1,0): +0.1; then (1,1): 0; then (0,1): -0.1
    np.testing.assert_allclose(p, [0.7, 0.5, 0.6, 0.6, 0.5])
    assert calls == [5]                       # one batched predict call
    assert p[0] == pytest.approx(toy_predict(X[None])[0, 0])
    assert p[-1] == pytest.approx(toy_predict(np.zeros((1, 2, 2)))[0, 0])


def test_insertion_curve_by_hand_and_endpoints():
    f, p = am.insertion_curve(toy_predict, X, S, c=0, steps=4)
    np.testing.assert_allclose(p, [0.5, 0.7, 0.6, 0.6, 0.7])
    assert p[0] == pytest.approx(toy_predict(np.zeros((1, 2, 2)))[0, 0])
    assert p[-1] == pytest.approx(toy_predict(X[None])[0, 0])
    # baseline other than 0: endpoints move with it
    _f, p = am.insertion_curve(toy_predict, X, S, c=0, steps=2, baseline=-1.0)
    assert p[0] == pytest.approx(toy_predict(-np.ones((1, 2, 2)))[0, 0])
    assert p[-1] == pytest.approx(0.7)
    # c=None: the prediction on x
    _, p_none = am.deletion_curve(toy_predict, X, S, steps=4)
    np.testing.assert_allclose(p_none, [0.7, 0.5, 0.6, 0.6, 0.5])


def test_curve_auc_trapezoid():
    assert am.curve_auc([0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert am.curve_auc([0, 0.25, 0.5, 0.75, 1.0], [0.7, 0.5, 0.6, 0.6, 0.5]) == pytest.approx(
        0.25 * ((0.7 + 0.5) + (0.5 + 0.6) + (0.6 + 0.6) + (0.6 + 0.5)) / 2)


def test_metrics_table_matches_the_single_metrics():
    sal = np.stack([np.array([[0.9, 0.8], [0.1, 0.0]]), np.array([[0.0, 0.1], [0.9, 0.2]])])
    table = am.metrics_table(toy_predict, XB, sal, top_percent=50, steps=4, random_seed=0)
    assert set(table) == {"binary", "soft", "random"}
    b = table["binary"]
    assert set(b) == set(am.METRIC_KEYS)
    masks = np.stack([am.binary_mask(s, 50) for s in sal])
    np.testing.assert_array_equal(masks[0], M_A)
    assert b["AI"] == pytest.approx(am.average_increase(toy_predict, XB, masks))
    assert b["AD"] == pytest.approx(am.average_drop(toy_predict, XB, masks))
    assert b["AG"] == pytest.approx(am.average_gain(toy_predict, XB, masks))
    assert b["FF"] == pytest.approx(am.faithfulness(toy_predict, XB, masks))
    assert b["Fid-In"] == pytest.approx(am.input_fidelity(toy_predict, XB, masks))
    assert b["SPS"] == pytest.approx(0.5)              # two ones out of four: (n - k) / n
    assert b["COMP"] == pytest.approx(np.log(2))
    assert b["mask_mean"] == pytest.approx(0.5) and b["n"] == 2
    del_auc = np.mean([am.curve_auc(*am.deletion_curve(toy_predict, X, s, 0, 4)) for s in sal])
    assert b["deletion_auc"] == pytest.approx(del_auc)
    assert table["soft"]["deletion_auc"] == b["deletion_auc"]
    soft = np.stack([am.soft_mask(s) for s in sal])
    assert table["soft"]["AD"] == pytest.approx(am.average_drop(toy_predict, XB, soft))
    assert table["soft"]["SPS"] == pytest.approx(np.mean([am.sparseness(m) for m in soft]))
    assert table["random"]["mask_mean"] == pytest.approx(0.5)
    for r in table.values():
        assert all(np.isfinite(v) for v in r.values())


def test_metrics_table_without_curves():
    sal = np.stack([np.array([[0.9, 0.8], [0.1, 0.0]]), np.array([[0.0, 0.1], [0.9, 0.2]])])
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return toy_predict(batch)

    table = am.metrics_table(counting, XB, sal, top_percent=50, steps=None)
    full = am.metrics_table(toy_predict, XB, sal, top_percent=50, steps=4)
    assert calls == [2, 2, 2, 2, 2]                   # x, then masked-in and masked-out per mask type: no curve
    for mask in ("binary", "soft"):
        assert np.isnan(table[mask]["deletion_auc"]) and np.isnan(table[mask]["insertion_auc"])
        assert {k: v for k, v in table[mask].items() if "auc" not in k} == \
            {k: v for k, v in full[mask].items() if "auc" not in k}
