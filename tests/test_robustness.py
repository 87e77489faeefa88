"""Noise, feature noise and attacks against hand-computed values on linear models; robustness.py end to end."""
import numpy as np
import pandas as pd
import pytest
from conftest import write_wav

from core import robustness

keras = pytest.importorskip("keras")
from core.saliency import logits_model

W0, W1 = np.array([[1.0, -2.0], [0.5, 0.0]]), np.array([[0.0, 1.0], [-1.0, 2.0]])   # class weights over (2, 2)


def linear_classifier(bias=(0.0, 0.0)):
    """logit_k = sum(W_k * x) + b_k on (2 frames, 2 mels) inputs."""
    inputs = keras.Input((2, 2))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([np.stack([W0.ravel(), W1.ravel()], axis=1).astype(np.float32), np.array(bias, np.float32)])
    return logits_model(model)


def test_real_frames_and_feature_noise_leave_padding_alone():
    x = np.zeros((2, 4, 3), np.float32)
    x[0, :2] = 1.0
    x[1, :3, 1] = -0.5
    np.testing.assert_array_equal(robustness.real_frame_weights(x)[..., 0], [[1, 1, 0, 0], [1, 1, 1, 0]])
    big = np.ones((1, 2000, 8), np.float32)
    big[0, 1000:] = 0.0
    noisy = robustness.feature_noise(big, 0.5, seed=0)
    assert np.all(noisy[0, 1000:] == 0.0)
    assert np.std(noisy[0, :1000] - 1.0) == pytest.approx(0.5, rel=0.03)


def test_noise_draws_are_paired_across_snrs():
    white = robustness.white_noise(3)
    np.testing.assert_array_equal(white(0, 100), white(0, 100))
    assert not np.array_equal(white(0, 100), white(1, 100))
    bank = [np.zeros(10), np.ones(10), np.full(10, 2.0)]
    picks = [robustness.recording_noise(bank, 3)(i, 50)[0] for i in range(20)]
    assert picks == [robustness.recording_noise(bank, 3)(i, 50)[0] for i in range(20)] and len(set(picks)) == 3


def test_fgsm_steps_eps_along_the_loss_gradient_sign():
    # true class 0: d CE / d x = p_1 (W1 - W0), so the step is eps * sign(W1 - W0)
    logits = linear_classifier()
    x = np.array([[[0.2, 0.1], [0.3, -0.4]]], np.float32)
    adv = robustness.fgsm(logits, x, np.array([0]), 0.1)
    np.testing.assert_allclose(adv - x, 0.1 * np.sign(W1 - W0)[None], atol=1e-7)
    padded = np.array([[[0.2, 0.1], [0.0, 0.0]]], np.float32)
    np.testing.assert_allclose(robustness.fgsm(logits, padded, np.array([0]), 0.1)[0, 1], 0.0)


def test_pgd_stays_in_the_ball_and_beats_fgsm():
    logits = linear_classifier(bias=(1.0, 0.0))
    x = np.random.default_rng(0).normal(0, 0.3, (16, 2, 2)).astype(np.float32)
    y = np.asarray(logits(x)).argmax(axis=1)
    adv = robustness.pgd(logits, x, y, 0.2, steps=8, seed=0)
    assert np.abs(adv - x).max() <= 0.2 + 1e-6

    def loss(z):
        f = np.asarray(logits(z), np.float64)
        return np.mean(np.log(np.exp(f).sum(axis=1)) - f[np.arange(len(y)), y])

    assert loss(adv) >= loss(robustness.fgsm(logits, x, y, 0.2)) - 1e-6 > loss(x)


def test_perturbations_scale_per_feature_in_the_units_of_the_front_end():
    from core.front_ends import MFCC, LogMel
    from core.model_data import feature_scale
    x = np.zeros((2, 3, 2), np.float32)
    x[0, :2] = [[1.0, 10.0], [3.0, 30.0]]
    x[1, :1] = [[5.0, 50.0]]                          # padding frames are left out of the spread
    np.testing.assert_array_equal(feature_scale(LogMel(), x), [1.0, 1.0])   # z-normalised already
    np.testing.assert_allclose(feature_scale(MFCC(), x), [np.std([1, 3, 5]), np.std([10, 30, 50])], rtol=1e-6)
    logits = linear_classifier()
    x = np.array([[[0.2, 0.1], [0.3, -0.4]]], np.float32)
    scale = np.array([1.0, 3.0], np.float32)
    np.testing.assert_allclose(robustness.fgsm(logits, x, np.array([0]), 0.1, scale) - x,
                               0.1 * scale * np.sign(W1 - W0)[None], atol=1e-6)
    adv = robustness.pgd(logits, x, np.array([0]), 0.1, steps=4, seed=0, scale=scale)
    assert np.all(np.abs(adv - x) <= 0.1 * scale + 1e-6) and np.abs(adv - x)[..., 1].max() > 0.1


def test_deepfool_finds_the_linear_boundary_in_one_step():
    # binary linear model: the closest boundary point is |f1 - f0| / ||W1 - W0|| away
    logits = linear_classifier(bias=(0.5, 0.0))
    x = np.array([[[0.2, 0.1], [0.3, 0.4]]], np.float32)
    f = np.asarray(logits(x))[0]
    r, iterations, flipped = robustness.deepfool(logits, x, overshoot=0.02)
    w = np.linalg.norm(W1 - W0)
    assert np.linalg.norm(r) == pytest.approx(1.02 * (abs(f[1] - f[0]) + 1e-4) / w, rel=1e-4)
    assert iterations.tolist() == [1] and flipped.tolist() == [True]
    start = int(f.argmax())
    towards = ((W0, W1)[1 - start] - (W0, W1)[start]) / w            # up the other class's logit
    np.testing.assert_allclose(r[0] / np.linalg.norm(r), towards, atol=1e-5)
    assert np.asarray(logits(x + r)).argmax() != f.argmax()


def test_robustness_command(tmp_path, trained_model_dir, data_dir, capsys):
    import robustness as command
    out = tmp_path / "rob"
    fast = ["--model-dir", str(trained_model_dir), "--out", str(out), "--snrs", "10", "0", "--eps", "0.1",
            "--sigmas", "0.5", "--pgd-steps", "2", "--deepfool-iterations", "3", "--cache-dir", str(tmp_path / "c")]
    command.main(fast)
    assert "measures noise the model has heard" in capsys.readouterr().err   # data_dir/Noise/wind is what it trained with
    table = pd.read_csv(out / "robustness.csv")
    assert table.kind.tolist() == ["clean", "white", "white", "wind", "wind", "feature_gaussian", "fgsm", "pgd"]
    assert table.loc[table.kind == "wind", "noise"].str.endswith("(seen in training)").all()
    assert table.accuracy.between(0, 1).all() and (table.n == table.n[0]).all()
    for name in ("noise_white.png", "noise_wind.png", "snr_curves.png", "adversarial_sensitivity.png"):
        assert (out / name).stat().st_size > 1000
    fooled = pd.read_csv(out / "deepfool.csv")
    assert (fooled.rho[fooled.flipped] > 0).all()

    fresh = tmp_path / "fresh_wind"
    write_wav(fresh / "gust.wav", (0.05 * np.random.default_rng(5).standard_normal(16000)).astype(np.float32))
    command.main([*fast, "--wind-dir", str(fresh), "--snrs", "0", "--eps", "0.1"])
    table = pd.read_csv(out / "robustness.csv")
    assert table.loc[table.kind == "wind", "noise"].tolist() == ["gust.wav (held out)"]


def test_robustness_command_errors(tmp_path, trained_model_dir):
    import robustness as command
    with pytest.raises(SystemExit, match="no such model directory"):
        command.main(["--model-dir", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="Test: no such split"):
        command.main(["--model-dir", str(trained_model_dir), "--data-dir", str(tmp_path)])


def test_the_wind_bench_holds_named_recordings_out_of_noise(tmp_path):
    from bench.wind_robustness import with_wind_held_out
    data = tmp_path / "data"
    for split in ("Training", "Test"):
        (data / split / "cow").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "c.wav"):
        write_wav(data / "Noise" / "wind" / name, np.zeros(160, np.float32))
    target = with_wind_held_out(data, ("b.wav",), tmp_path / "held")
    assert sorted(p.name for p in (target / "Noise" / "wind").iterdir()) == ["a.wav", "c.wav"]
    assert [p.name for p in (target / "heldout" / "wind").iterdir()] == ["b.wav"]
    assert (target / "Training" / "cow").is_dir() and (target / "Test" / "cow").is_dir()
    with_wind_held_out(data, ("a.wav",), target)                  # another choice in the same folder
    assert sorted(p.name for p in (target / "Noise" / "wind").iterdir()) == ["b.wav", "c.wav"]
    assert [p.name for p in (target / "heldout" / "wind").iterdir()] == ["a.wav"]
    with pytest.raises(SystemExit, match="no recording named d.wav"):
        with_wind_held_out(data, ("d.wav",), tmp_path / "other")


def test_the_wind_bench_rows_pin_the_settings_they_measured():
    import enhance
    from bench.wind_robustness import ROWS
    parse = enhance.make_parser().parse_args
    db = parse(ROWS["db"][1])
    assert (db.scaling, db.snr_min, db.p_noise, db.synthetic_wind, db.synthetic_wind_corner) == (
        "db", 5.0, 0.5, 0, [50.0, 2000.0])                        # the recipe before 2026-12-05
    pcen = parse(ROWS["pcen"][1])
    assert (pcen.scaling, pcen.snr_min, pcen.p_noise, pcen.synthetic_wind) == ("pcen", 5.0, 0.5, 0)

    def wind_settings(args):
        return args.scaling, args.snr_min, args.p_noise, args.synthetic_wind, args.synthetic_wind_corner
    windy = parse(ROWS["pcen-synthetic-wind-broadband-snr-0-p75"][1])
    assert wind_settings(windy) == ("pcen", 0.0, 0.75, 16, [50.0, 8000.0])      # the windy-site option
    shipped = parse(ROWS["pcen-synthetic-wind-broadband-snr-5-p75"][1])
    assert wind_settings(parse([])) == wind_settings(shipped) == ("pcen", -5.0, 0.75, 16, [50.0, 8000.0])
    from bench.ablate_enhance import ROWS as ABLATIONS
    assert wind_settings(parse(ABLATIONS["calm"][1])) == wind_settings(pcen)
    assert wind_settings(parse(ABLATIONS["windy"][1])) == wind_settings(windy)
