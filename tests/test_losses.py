"""NT-Xent, the prototypical loss, LogitNorm and the prototype head against values worked out by hand."""
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from core import layers, losses  # noqa: E402  (after the skip: both import Keras)


def value(t):
    return float(np.asarray(t))


def test_nt_xent_matches_hand_computation():
    # views after L2 normalisation: a1=(1,0) a2=(0,1) b1=(.6,.8) b2=(0,-1); pairs (a1,b1), (a2,b2); T=0.5
    z1 = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    z2 = np.array([[3.0, 4.0], [0.0, -1.0]], np.float32)
    e = math.exp
    # each row: -log(exp(sim(partner)/T) / sum over the 3 other views of exp(sim/T))
    a1 = -math.log(e(1.2) / (e(0.0) + e(1.2) + e(0.0)))      # sims to a2, b1, b2: 0, .6, 0
    a2 = -math.log(e(-2.0) / (e(0.0) + e(1.6) + e(-2.0)))    # sims to a1, b1, b2: 0, .8, -1
    b1 = -math.log(e(1.2) / (e(1.2) + e(1.6) + e(-1.6)))     # sims to a1, a2, b2: .6, .8, -.8
    b2 = -math.log(e(-2.0) / (e(0.0) + e(-2.0) + e(-1.6)))   # sims to a1, a2, b1: 0, -1, -.8
    expected = (a1 + a2 + b1 + b2) / 4
    assert value(losses.nt_xent_loss(z1, z2, temperature=0.5)) == pytest.approx(expected, rel=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones():
    z = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    matched = value(losses.nt_xent_loss(z, z, temperature=0.1))
    swapped = value(losses.nt_xent_loss(z, z[::-1].copy(), temperature=0.1))
    # matched: each view's partner has sim 1, the two others 0: log(1 + 2 exp(-10))
    assert matched == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)   # float32 near 0
    assert swapped > 9.0


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def test_logit_norm_matches_hand_computation():
    # logits (4, 1, -2): centred (3, 0, -3), length 3*sqrt(2); with tau = 1 / (3*sqrt(2)) they stay (3, 0, -3)
    loss = losses.LogitNormLoss(tau=1 / (3 * math.sqrt(2)))
    p = softmax(np.array([[4.0, 1.0, -2.0]]))
    e = math.exp
    assert value(loss(np.array([[1.0, 0, 0]]), p)) == pytest.approx(-math.log(e(3) / (e(3) + 1 + e(-3))), rel=1e-4)
    assert value(loss(np.array([[0, 0, 1.0]]), p)) == pytest.approx(-math.log(e(-3) / (e(3) + 1 + e(-3))), rel=1e-4)
    # label smoothing 0.3 over 3 classes: targets (0.8, 0.1, 0.1)
    smoothed = losses.LogitNormLoss(tau=1 / (3 * math.sqrt(2)), label_smoothing=0.3)
    log_z = math.log(e(3) + 1 + e(-3))
    expected = -(0.8 * (3 - log_z) + 0.1 * (0 - log_z) + 0.1 * (-3 - log_z))
    assert value(smoothed(np.array([[1.0, 0, 0]]), p)) == pytest.approx(expected, rel=1e-4)


def test_logit_norm_ignores_the_logits_length():
    # plain cross-entropy falls as correct logits grow; LogitNorm sees only their direction
    target, z = np.array([[1.0, 0, 0]]), np.array([[1.0, 0.2, -0.5]])
    loss = losses.LogitNormLoss(tau=0.1)
    assert value(loss(target, softmax(5 * z))) == pytest.approx(value(loss(target, softmax(z))), rel=1e-4)
    assert value(loss(target, softmax(z + 7))) == pytest.approx(value(loss(target, softmax(z))), rel=1e-4)
    plain = keras.losses.CategoricalCrossentropy()
    assert value(plain(target, softmax(5 * z))) < value(plain(target, softmax(z))) / 3


def test_prototypical_loss_matches_hand_computation():
    support = np.array([[0, 0], [2, 0], [0, 2], [0, 4]], np.float32)   # prototypes (1, 0) and (0, 3)
    support_labels = np.array([0, 0, 1, 1])
    query = np.array([[1, 1], [0, 3.5], [0.9, 2]], np.float32)
    query_labels = np.array([0, 1, 0])
    # squared distances to (1,0), (0,3): q1 1 and 5; q2 13.25 and .25; q3 4.01 and 1.81 (nearest is wrong)
    e = math.exp
    expected = np.mean([-math.log(e(-1) / (e(-1) + e(-5))),
                        -math.log(e(-0.25) / (e(-13.25) + e(-0.25))),
                        -math.log(e(-4.01) / (e(-4.01) + e(-1.81)))])
    loss, accuracy = losses.prototypical_loss(support, support_labels, query, query_labels, 2)
    assert value(loss) == pytest.approx(expected, rel=1e-5)
    assert value(accuracy) == pytest.approx(2 / 3)


def test_class_prototypes_are_class_means():
    emb = np.array([[0, 0], [2, 0], [0, 2], [0, 4], [5, 5]], np.float32)
    got = np.asarray(losses.class_prototypes(emb, np.array([0, 0, 1, 1, 2]), 3))
    np.testing.assert_allclose(got, [[1, 0], [0, 3], [5, 5]])


def test_prototype_head_gives_softmax_of_negative_squared_distance():
    head = layers.PrototypeHead(2)
    x = np.array([[1.0, 1.0]], np.float32)
    head.build(x.shape)
    head.set_prototypes(np.array([[1, 0], [0, 3]], np.float32))
    p = np.asarray(head(x))
    expected = np.array([math.exp(-1), math.exp(-5)]) / (math.exp(-1) + math.exp(-5))
    np.testing.assert_allclose(p[0], expected, rtol=1e-5)
    assert not head.trainable_weights


def test_masked_mean_pooling_ignores_padding_tokens():
    tokens = np.array([[[1.0], [3.0], [100.0]]], np.float32)
    patches = np.array([[[0.5, 0.0], [0.0, -1.0], [0.0, 0.0]]], np.float32)   # third token is padding
    assert np.asarray(layers.MaskedMeanPooling()([tokens, patches]))[0, 0] == pytest.approx(2.0)
    silent = np.zeros_like(patches)                                           # no sound: plain mean
    assert np.asarray(layers.MaskedMeanPooling()([tokens, silent]))[0, 0] == pytest.approx(104 / 3)
