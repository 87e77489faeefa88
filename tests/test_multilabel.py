"""Multi-label pieces against hand-computed values: focal loss, mAP, ROC AUC, thresholds, sigmoid calibration."""
import math

import numpy as np
import pytest

from core import openset
from core.calibration import (
    binary_negative_log_likelihood,
    fit_binary_temperature,
    sigmoid,
)
from core.multilabel import (
    best_f1_thresholds,
    label_sets_micro_f1,
    listed_classes,
    mean_average_precision,
    mean_roc_auc,
)

# four clips, four classes: class 2 is never present (no AP, no AUC), class 3 always (AP, but no AUC)
TARGETS = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]])
SCORES = np.array([[0.9, 0.2, 0.5, 0.1], [0.8, 0.7, 0.5, 0.2], [0.3, 0.6, 0.5, 0.3], [0.1, 0.4, 0.5, 0.4]])


def test_focal_loss_by_hand():
    keras = pytest.importorskip("keras")
    from core.losses import BinaryFocalLoss
    y, p = np.array([[1.0, 0.0]]), np.array([[0.9, 0.2]])
    # present: -(1 - 0.9)^2 ln 0.9; absent: -0.2^2 ln 0.8; mean over the two classes
    expected = (0.01 * -math.log(0.9) + 0.04 * -math.log(0.8)) / 2
    assert float(BinaryFocalLoss()(y, p)) == pytest.approx(expected, rel=1e-5)
    assert float(BinaryFocalLoss(gamma=0.0)(y, p)) == pytest.approx((-math.log(0.9) - math.log(0.8)) / 2, rel=1e-5)
    assert keras.saving.get_registered_object("animal_sounds>BinaryFocalLoss") is BinaryFocalLoss


def test_mean_average_precision_by_hand():
    # class 0 ranks pos, neg, pos, neg: AP = 0.5 * 1 + 0.5 * 2/3; class 1 ranks both positives first: 1; class 3: 1
    assert mean_average_precision(TARGETS, SCORES) == pytest.approx((5 / 6 + 1 + 1) / 3)


def test_mean_roc_auc_by_hand():
    # class 0: positives 0.9, 0.3 against negatives 0.8, 0.1 win 3 of 4 pairs; class 1 wins all
    assert mean_roc_auc(TARGETS, SCORES) == pytest.approx((0.75 + 1.0) / 2)


def test_macro_metrics_refuse_clips_without_any_usable_class():
    with pytest.raises(ValueError, match="no class"):
        mean_roc_auc(np.ones((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        mean_average_precision(TARGETS, SCORES[:, :2])


def test_thresholds_maximise_each_class_f1():
    # class 0: a cut at 0.3 keeps both positives and one negative (F1 0.8), the best; class 1: 0.6 is perfect
    np.testing.assert_allclose(best_f1_thresholds(TARGETS, SCORES, default=0.5), [0.3, 0.6, 0.5, 0.1])


def test_listed_classes_are_those_at_or_above_threshold_most_probable_first():
    assert listed_classes([0.2, 0.9, 0.6], [0.5, 0.5, 0.7]) == [1]
    assert listed_classes([0.2, 0.9, 0.6], [0.2, 0.5, 0.5]) == [1, 2, 0]
    assert listed_classes([0.1, 0.1], [0.5, 0.5]) == []


def test_label_sets_micro_f1_by_hand():
    # TP 2, FP 1, FN 1: 2 * 2 / (2 * 2 + 1 + 1)
    assert label_sets_micro_f1([[1, 0], [1, 1]], [[1, 1], [0, 1]]) == pytest.approx(4 / 6)


def test_sigmoid_calibration_and_scores():
    np.testing.assert_allclose(sigmoid([0.0, 2.0, -800.0], 2.0), [0.5, 1 / (1 + math.e ** -1), 0.0], atol=1e-12)
    assert binary_negative_log_likelihood([[0.5, 0.5]], [[1, 0]]) == pytest.approx(math.log(2))
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 5))
    targets = (rng.random(true_logits.shape) < sigmoid(true_logits)).astype(float)
    assert fit_binary_temperature(3 * true_logits, targets) == pytest.approx(3.0, rel=0.1)
    np.testing.assert_allclose(openset.joint_energy_score([[0.0, 0.0]]), [-2 * math.log(2)])
    np.testing.assert_allclose(openset.binary_entropy_score([[0.5, 1.0]]), [math.log(2)])


def test_a_sigmoid_open_set_scores_one_minus_the_largest_sigmoid(tmp_path):
    from core.rejection import OpenSet
    rng = np.random.default_rng(1)
    emb, labels = rng.standard_normal((30, 4)), np.arange(30) % 3
    logits = rng.standard_normal((20, 3)) * 3
    fitted = OpenSet.fit(emb, labels, logits, rng.standard_normal((20, 4)), np.arange(20) % 3, 3, activation="sigmoid")
    probs = sigmoid(logits, fitted.temperature)
    np.testing.assert_allclose(fitted.probabilities(logits), probs)
    np.testing.assert_allclose(fitted.ood_score(logits, None, "msp"), 1 - probs.max(axis=1))
    fitted.save_arrays(tmp_path)
    assert OpenSet.load(tmp_path, fitted.config()).activation == "sigmoid"
