"""Mix-noise: the original project's naive wind mixing, kept as the counter-example.

    python mix_noise.py [--snr-min 0 --snr-max 20 --epochs 30 --seed 42]

Before training, every training clip is replaced by one copy mixed with a
random wind recording (Noise/wind) at an SNR drawn uniformly from 0-20 dB,
measured against the power of the *whole* clip (``mix_at_snr(...,
active_only=False)``). No clean copy is kept and the mixture is drawn once, so
every epoch sees the same noisy set; validation and test stay clean. The
network and the fit are the baseline's (``baseline.build_model``), so any
difference comes from the mixing alone.

Why it hurts: the training set loses every clean example while validation
and test are clean, so the model fits a distribution it is never tested on,
and one fixed draw adds no variety (a shifted training set, not augmentation).
Wind fills the quiet gaps between calls, which sit at the dB floor in a clean
clip; the classes with the sparsest clips (bird chirps) lose that contrast
most. Measured against the whole clip instead of the call, the nominal SNR
also means a different call-to-wind ratio for sparse and dense clips (on this
dataset a small effect: median 0-1 dB, 4.5 dB for the sparsest tenth of bird
clips).
"""
import dataclasses

import numpy as np

import baseline
import common


def naive_mix(clips: list, bank: list, cfg, snr_db: tuple, rng: np.random.Generator) -> np.ndarray:
    """Features (n, frames, mels) of each clip mixed once with random wind at a whole-clip SNR."""
    return np.stack([common.clip_features(
        common.mix_at_snr(y, bank[int(rng.integers(len(bank)))], float(rng.uniform(*snr_db)), rng,
                          active_only=False), cfg) for y in clips])


def train(data, args, staging):
    cfg = common.FeatureConfig()
    rng = np.random.default_rng(args.seed)
    noisy = naive_mix(data.train.audio, common.noise_bank(args, cfg), cfg, (args.snr_min, args.snr_max), rng)
    data = dataclasses.replace(data, train=dataclasses.replace(data.train, x=noisy))
    model = baseline.build_model(noisy.shape[1:], len(data.classes))
    return model, common.fit_classifier(model, data, args)


def make_parser():
    parser = common.make_parser("mix_noise", __doc__.splitlines()[0])
    parser.add_argument("--snr-min", type=float, default=0.0, help="lowest whole-clip SNR in dB")
    parser.add_argument("--snr-max", type=float, default=20.0, help="highest whole-clip SNR in dB")
    return parser


if __name__ == "__main__":
    common.run_experiment("mix_noise", make_parser().parse_args(), train, with_audio=True)
