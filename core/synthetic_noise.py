"""A synthetic bank of non-animal sounds, for open-set tests and noise augmentation.

Kinds (:data:`KINDS`)
---------------------
``white``   flat spectrum Gaussian noise.
``pink``    power ~ 1/f: white noise through Paul Kellet's "refined" pink filter
            (six parallel one-pole sections plus a two-tap direct path; within
            about 0.05 dB of 1/f from ~2e-4 * sr up to near Nyquist).
``brown``   power ~ 1/f^2: leaky integrated white noise
            ``y[n] = a y[n-1] + w[n]``, ``a = exp(-2 pi 20 Hz / sr)``; the leak
            flattens the spectrum below 20 Hz so the signal cannot drift off.
``hum``     mains hum: a 50 or 60 Hz fundamental (chosen with ``rng``), the
            strongest component, plus harmonics 2..8 at random lower
            amplitudes and phases, and broadband noise 30 dB below the hum.
``clicks``  about 4 clicks per second at random instants (Bernoulli per
            sample), each an impulse of random sign and magnitude decaying with
            a 0.5 ms time constant, over a bed of white hiss at -50 dBFS RMS.
``hiss``    near silence: white noise high-passed at 2 kHz (2nd-order
            Butterworth) at -60 dBFS RMS.

Levels
------
``white``, ``pink``, ``brown`` and ``hum`` have an RMS of -20 dBFS (0.1),
``hiss`` -60 dBFS (0.001) and the clicks' bed -50 dBFS; these are the
long-run (expected) values, set by fixed gains computed from each filter's
response, not by measuring the output, so a block never needs the rest of the
file. Pink and brown clips, whose power sits at low frequencies, vary most
around them: about 0.5 dB (one standard deviation) for one second, under 0.2 dB
for ten; white, hum and hiss vary by under 0.1 dB. Clicks have peaks of 0.1 to 0.5
(-20 to -6 dBFS); only two clicks within a millisecond or so could add up
beyond 0.5.

Streaming and determinism
-------------------------
Every kind is white noise (or an impulse train) through a linear filter whose
state is carried from block to block, and every random stream is consumed one
value per sample (or per click) in order. Hence :func:`iter_synthetic_noise`
yields, block after block, the very samples :func:`synthetic_noise` returns
for the same seed, whatever ``block_seconds`` is, and an hour of noise can be
written with one block in memory. The recursive filters start from rest and
are run over ``10`` time constants of discarded noise first, so the output has
no fade-in. The same ``np.random.default_rng(seed)`` gives the same samples;
``rng=None`` means ``default_rng(0)``.
"""
from collections.abc import Callable, Iterator

import numpy as np
from scipy.signal import butter, lfilter, sosfilt, sosfilt_zi

KINDS = ("white", "pink", "brown", "hum", "clicks", "hiss")

NOISE_RMS_DBFS = -20.0       # white, pink, brown, hum
HISS_RMS_DBFS = -60.0
CLICK_BED_RMS_DBFS = -50.0   # the hiss under the clicks
CLICK_PEAK_DBFS = -6.0       # the largest click
CLICK_MIN_PEAK = 0.2         # the smallest click, as a share of the largest
CLICKS_PER_SECOND = 4.0
CLICK_DECAY_SECONDS = 0.0005
BROWN_CORNER_HZ = 20.0
HISS_CUTOFF_HZ = 2000.0
HUM_NOISE_DB = -30.0         # broadband noise under the hum, relative to the hum's power
HUM_HARMONICS = 8

# Paul Kellet's refined pink filter (music-dsp archive, 1999): b_i = pole_i * b_i + gain_i * white, summed
_KELLET_POLES = np.array([0.99886, 0.99332, 0.96900, 0.86650, 0.55000, -0.7616])
_KELLET_GAINS = np.array([0.0555179, 0.0750759, 0.1538520, 0.3104856, 0.5329522, -0.0168980])
_KELLET_DIRECT = (0.5362, 0.115926)   # taps on the white input w[n] and w[n - 1]


def _amplitude(dbfs: float) -> float:
    return 10.0 ** (dbfs / 20.0)


def _kellet_power_gain() -> float:
    """Output power of the pink filter for unit-variance white input: sum of its squared impulse response.

    With ``s[n] = sum_i g_i p_i^n`` and direct taps ``c0, c1``:
    ``sum_n s[n]^2 = sum_ij g_i g_j / (1 - p_i p_j)``, plus the direct path's
    ``c0^2 + c1^2`` and its cross terms ``2 c0 s[0] + 2 c1 s[1]``.
    """
    g, p = _KELLET_GAINS, _KELLET_POLES
    c0, c1 = _KELLET_DIRECT
    sections = np.sum(np.outer(g, g) / (1.0 - np.outer(p, p)))
    return float(sections + 2 * c0 * g.sum() + 2 * c1 * (g * p).sum() + c0 ** 2 + c1 ** 2)


def _warm_up_samples(pole: float) -> int:
    """Ten time constants of a one-pole filter: its start-from-rest transient decays to e^-10."""
    return int(np.ceil(10.0 / (1.0 - abs(pole))))


def _white(rms: float, stream: np.random.Generator) -> Callable[[int], np.ndarray]:
    return lambda n: rms * stream.standard_normal(n)


def _pink(rms: float, stream: np.random.Generator) -> Callable[[int], np.ndarray]:
    gain = rms / np.sqrt(_kellet_power_gain())
    c0, c1 = _KELLET_DIRECT
    state = {"sections": np.zeros(len(_KELLET_POLES)), "last_white": 0.0}

    def draw(n: int) -> np.ndarray:
        w = stream.standard_normal(n)
        y = c0 * w
        y[0] += c1 * state["last_white"]
        y[1:] += c1 * w[:-1]
        for i, (g, p) in enumerate(zip(_KELLET_GAINS, _KELLET_POLES)):
            section, zf = lfilter([g], [1.0, -p], w, zi=state["sections"][i:i + 1])
            state["sections"][i] = zf[0]
            y += section
        state["last_white"] = w[-1]
        return gain * y

    draw(_warm_up_samples(_KELLET_POLES[0]))
    return draw


def _brown(rms: float, sr: int, stream: np.random.Generator) -> Callable[[int], np.ndarray]:
    leak = np.exp(-2 * np.pi * BROWN_CORNER_HZ / sr)
    gain = rms * np.sqrt(1.0 - leak ** 2)   # an AR(1) driven by unit white noise has variance 1 / (1 - a^2)
    state = np.zeros(1)

    def draw(n: int) -> np.ndarray:
        y, state[:] = lfilter([1.0], [1.0, -leak], stream.standard_normal(n), zi=state)
        return gain * y

    draw(_warm_up_samples(leak))
    return draw


def _hiss(rms: float, sr: int, stream: np.random.Generator) -> Callable[[int], np.ndarray]:
    sos = butter(2, min(HISS_CUTOFF_HZ, 0.25 * sr), "highpass", fs=sr, output="sos")
    impulse = np.zeros(8192)
    impulse[0] = 1.0
    gain = rms / np.sqrt(np.sum(sosfilt(sos, impulse) ** 2))   # the filter's power gain on white noise
    state = np.zeros_like(sosfilt_zi(sos))

    def draw(n: int) -> np.ndarray:
        nonlocal state
        y, state = sosfilt(sos, stream.standard_normal(n), zi=state)
        return gain * y

    return draw


def _hum(rms: float, sr: int, setup: np.random.Generator,
         stream: np.random.Generator) -> Callable[[int], np.ndarray]:
    mains = int(setup.choice((50, 60)))
    harmonics = np.arange(1, HUM_HARMONICS + 1)
    harmonics = harmonics[harmonics * mains < sr / 2]
    # the fundamental at 1 and every harmonic below 0.5 keeps the spectral peak at the mains frequency
    amplitudes = np.concatenate([[1.0], setup.uniform(0.1, 0.5, len(harmonics) - 1) / harmonics[1:]])
    phases = setup.uniform(0.0, 2 * np.pi, len(harmonics))
    tone_power = np.sum(amplitudes ** 2) / 2
    noise_sd = np.sqrt(tone_power * 10.0 ** (HUM_NOISE_DB / 10))
    gain = rms / np.sqrt(tone_power + noise_sd ** 2)
    frequencies = (harmonics * mains).astype(np.int64)
    state = {"sample": 0}

    def draw(n: int) -> np.ndarray:
        sample = state["sample"] + np.arange(n, dtype=np.int64)
        # integer (f * m) mod sr keeps the phase exact however long the file runs
        cycles = (frequencies[:, None] * sample[None, :]) % sr / sr
        y = amplitudes @ np.sin(2 * np.pi * cycles + phases[:, None])
        state["sample"] += n
        return gain * (y + noise_sd * stream.standard_normal(n))

    return draw


def _clicks(sr: int, bed: np.random.Generator, when: np.random.Generator,
            size: np.random.Generator) -> Callable[[int], np.ndarray]:
    bed_rms, peak = _amplitude(CLICK_BED_RMS_DBFS), _amplitude(CLICK_PEAK_DBFS)
    click_probability = CLICKS_PER_SECOND / sr
    decay = np.exp(-1.0 / (CLICK_DECAY_SECONDS * sr))
    state = np.zeros(1)

    def draw(n: int) -> np.ndarray:
        hits = when.random(n) < click_probability
        u = size.uniform(-1.0, 1.0, int(hits.sum()))   # one draw per click gives its sign and magnitude
        impulses = np.zeros(n)
        impulses[hits] = np.sign(u) * peak * (CLICK_MIN_PEAK + (1 - CLICK_MIN_PEAK) * np.abs(u))
        y, state[:] = lfilter([1.0], [1.0, -decay], impulses, zi=state)
        return y + bed_rms * bed.standard_normal(n)

    return draw


def _source(kind: str, sr: int, rng: np.random.Generator | None) -> Callable[[int], np.ndarray]:
    """A stateful ``draw(n)`` returning the next ``n`` float64 samples of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(KINDS)}")
    if sr != int(sr) or sr <= 0:
        raise ValueError(f"sr must be a positive whole number of Hz, got {sr}")
    sr = int(sr)
    rng = rng if rng is not None else np.random.default_rng(0)
    # independent child streams, each consumed in order, so the samples do not depend on the block size
    streams = [np.random.default_rng(seed) for seed in rng.integers(0, 2 ** 63, size=3)]
    rms = _amplitude(NOISE_RMS_DBFS)
    if kind == "white":
        return _white(rms, streams[0])
    if kind == "pink":
        return _pink(rms, streams[0])
    if kind == "brown":
        return _brown(rms, sr, streams[0])
    if kind == "hum":
        return _hum(rms, sr, streams[1], streams[0])
    if kind == "clicks":
        return _clicks(sr, *streams)
    return _hiss(_amplitude(HISS_RMS_DBFS), sr, streams[0])


def synthetic_noise(kind: str, seconds: float, sr: int = 16000,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """``round(seconds * sr)`` samples of a synthetic non-animal sound.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS` (see the module docstring for each one's recipe and level).
    seconds : float
    sr : int
        Sampling rate in Hz.
    rng : numpy.random.Generator or None
        Source of randomness; ``None`` means ``np.random.default_rng(0)``. The
        generator is advanced, so two calls with one ``rng`` give two different
        sounds.

    Returns
    -------
    y : ndarray of float32, shape (round(seconds * sr),)
        Mono audio in [-1, 1].
    """
    draw = _source(kind, sr, rng)
    n = round(seconds * sr)
    return draw(n).astype(np.float32) if n > 0 else np.zeros(0, np.float32)


def iter_synthetic_noise(kind: str, seconds: float, sr: int = 16000, block_seconds: float = 10.0,
                         rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Yield :func:`synthetic_noise` in float32 blocks of ``round(block_seconds * sr)`` samples.

    The blocks concatenate to exactly what ``synthetic_noise(kind, seconds, sr,
    rng)`` returns for an equally seeded ``rng`` (filter states are carried
    across blocks; see the module docstring); the last block may be shorter.
    Memory stays at one block, so long files can be streamed to disk.
    """
    draw = _source(kind, sr, rng)
    total, block = round(seconds * sr), max(1, round(block_seconds * sr))
    for start in range(0, total, block):
        yield draw(min(block, total - start)).astype(np.float32)
