"""Temperature scaling and calibration metrics, checked against values worked out by hand."""
import numpy as np
import pytest

from core import calibration

# four clips, two classes: confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right)
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
LABELS = np.array([0, 1, 1, 0])


def test_softmax_values_temperature_and_overflow():
    np.testing.assert_allclose(calibration.softmax([[0.0, np.log(3.0)]]), [[0.25, 0.75]])
    # T = 2 halves the logits: [0, ln 9] / 2 = [0, ln 3]
    np.testing.assert_allclose(calibration.softmax([[0.0, np.log(9.0)]], temperature=2.0), [[0.25, 0.75]])
    np.testing.assert_allclose(calibration.softmax([[1000.0, 0.0], [-1000.0, -1000.0]]), [[1.0, 0.0], [0.5, 0.5]])
    assert calibration.softmax(np.zeros((2, 3, 4))).shape == (2, 3, 4)
    with pytest.raises(ValueError):
        calibration.softmax([[0.0, 1.0]], temperature=0.0)


def test_log_probabilities_act_as_logits():
    z = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, 3.0]])
    p = calibration.softmax(z)
    np.testing.assert_allclose(calibration.softmax(calibration.logits_from_probs(p)), p)
    np.testing.assert_allclose(calibration.apply_temperature(p, 2.0), calibration.softmax(z, 2.0))


def test_negative_log_likelihood_by_hand():
    # true-class probabilities 0.9, 0.2, 0.7, 0.6
    expected = -(np.log(0.9) + np.log(0.2) + np.log(0.7) + np.log(0.6)) / 4    # = 0.645575...
    assert calibration.negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected)
    assert expected == pytest.approx(0.645575, abs=1e-6)
    # a zero probability costs -log(1e-12) = 27.631 nats, not infinity
    assert calibration.negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(27.631021, abs=1e-6)


def test_reliability_bins_right_closed():
    bins = calibration.reliability_bins(PROBS, LABELS, n_bins=5)
    # (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]: 0.6 goes to the 3rd bin and 0.8 to the 4th (right-closed)
    np.testing.assert_array_equal(bins["count"], [0, 0, 1, 2, 1])
    np.testing.assert_allclose(bins["confidence"][2:], [0.6, 0.75, 0.9])
    np.testing.assert_allclose(bins["accuracy"][2:], [1.0, 0.5, 1.0])
    assert np.all(np.isnan(bins["confidence"][:2])) and np.all(np.isnan(bins["accuracy"][:2]))
    np.testing.assert_allclose(bins["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # 0.28 * 25 rounds to 7.000000000000001, yet 0.28 belongs to (0.24, 0.28], bin 6; 1.0 to the last bin
    edge_case = calibration.reliability_bins([[0.28, 0.24, 0.24, 0.24]], [0], 25)
    np.testing.assert_array_equal(np.flatnonzero(edge_case["count"]), [6])
    np.testing.assert_array_equal(np.flatnonzero(calibration.reliability_bins([[1.0, 0.0]], [0], 10)["count"]), [9])


def test_expected_calibration_error_by_hand():
    # (|1 - 0.6| * 1 + |0.5 - 0.75| * 2 + |1 - 0.9| * 1) / 4 = (0.4 + 0.5 + 0.1) / 4
    assert calibration.expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.25)
    # five clips all at confidence 0.8 with four right: perfectly calibrated
    probs = np.tile([0.8, 0.2], (5, 1))
    assert calibration.expected_calibration_error(probs, [0, 0, 0, 0, 1], n_bins=10) == pytest.approx(0.0, abs=1e-12)
    # the same clips all right: under-confident by 0.2
    assert calibration.expected_calibration_error(probs, [0] * 5, n_bins=10) == pytest.approx(0.2)


@pytest.fixture(scope="module")
def tempered_logits():
    """Logits z and labels drawn from softmax(z / 2.5): the true temperature is 2.5."""
    rng = np.random.default_rng(0)
    z = 4.0 * rng.standard_normal((20000, 5))
    p = calibration.softmax(z, 2.5)
    labels = (rng.random((len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1)   # inverse-CDF sampling
    return z, labels


def test_fit_temperature_recovers_the_true_one(tempered_logits):
    z, labels = tempered_logits
    t = calibration.fit_temperature(z, labels)
    assert t == pytest.approx(2.5, abs=0.2)
    # the fitted T lowers the NLL compared with no scaling
    assert (calibration.negative_log_likelihood(calibration.softmax(z, t), labels)
            < calibration.negative_log_likelihood(calibration.softmax(z), labels))


def test_fit_temperature_on_log_probs_equals_fit_on_logits(tempered_logits):
    z, labels = tempered_logits
    z, labels = z[:2000], labels[:2000]
    log_probs = np.log(calibration.softmax(z))          # what a softmax model gives, up to the log
    assert calibration.fit_temperature(log_probs, labels) == pytest.approx(calibration.fit_temperature(z, labels),
                                                                          rel=1e-4)


def test_fit_temperature_rejects_bad_input():
    with pytest.raises(ValueError):
        calibration.fit_temperature([[0.0, -np.inf]], [0])           # log(0): use logits_from_probs
    with pytest.raises(ValueError):
        calibration.fit_temperature([[0.0, 1.0]], [2])               # label out of range


def test_plot_reliability_writes_a_png(tmp_path, tempered_logits):
    z, labels = tempered_logits
    path = tmp_path / "charts" / "reliability.png"
    calibration.plot_reliability(calibration.softmax(z), calibration.softmax(z, 2.5), labels, path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == ["reliability.png"]   # no temporary file left behind


def test_ece_if_calibrated_is_the_binomial_expectation_in_one_bin():
    from math import comb
    n, p = 50, 0.8                      # every clip in one bin, its top class right with probability 0.8
    exact = sum(comb(n, k) * p ** k * (1 - p) ** (n - k) * abs(k / n - p) for k in range(n + 1))
    assert abs(calibration.ece_if_calibrated(np.tile([p, 1 - p], (n, 1)), draws=20000) - exact) < 0.003
    assert calibration.ece_if_calibrated(np.tile([p, 1 - p], (5000, 1))) < 0.01   # many clips: near 0


def test_ece_if_calibrated_matches_labels_drawn_from_the_probabilities():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(4, 0.5), size=120)
    drawn = [calibration.expected_calibration_error(probs, [rng.choice(4, p=row / row.sum()) for row in probs])
             for _ in range(400)]
    assert abs(np.mean(drawn) - calibration.ece_if_calibrated(probs, draws=4000)) < 0.005
