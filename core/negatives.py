"""Negatives for outlier exposure: sounds that are no animal, shown to the model while it trains.

A classifier trained only on animals has never been told what "none of
them" looks like, so wind or hum can get a confident animal label. Outlier
exposure (Hendrycks et al. 2019) adds such sounds to training, in one of two
designs (``--outliers``):

- ``uniform``: the target of a negative is the uniform distribution over the
  animal classes, so the model learns to be unsure on them;
- ``background``: a reserved ``background`` output that is trained like a
  class and never reported as an animal (``predict.py`` says ``unknown``).

Negatives come from every recording under ``<data>/Noise/<kind>/`` (cut into
clips of animal-clip length), every clip of a ``Training/`` folder named
``background``, ``noise`` or ``other``, a synthetic bank (white, pink,
brown noise, mains hum, clicks, silence with hiss), and any synthetic wind the
recipe mixes under its calls: a noise the model hears *with* a call is shown
to it *alone* too, or loud broadband wind under animal labels teaches it that
steady noise can hold an animal. They are split into
training and validation by source recording, like the animal clips.
Optionally (``--shifted-negatives``), the animal clips themselves, played
faster or slower (pitch and tempo moved together, e.g. an octave), are
negatives too, each in its source clip's split: near misses that only an
animal's own pitch range tells apart from it.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .audio import AudioError, is_audio_file, load_audio, warn
from .dataset import Clips, DataSplits, group_split
from .features import FeatureConfig, clip_features

OUTLIER_DESIGNS = ("none", "uniform", "background")
DEFAULT_OUTLIERS = "uniform"
BACKGROUND = "background"
NEGATIVE_FOLDERS = ("background", "noise", "other")   # Training/ folders that hold no animal
CLIP_SECONDS = (1.5, 6.0)                              # negatives as long as typical animal clips
SYNTHETIC_PER_KIND = 20
SHIFTED_PREFIX = "played-x"                            # a shifted clip's hash: played-x<speed>/<source clip's hash>


@dataclasses.dataclass
class Negatives:
    """Audio of negative clips, the recording each was cut from (its group), and its source kind."""
    audio: list[np.ndarray]
    groups: list[str]
    kinds: list[str]

    def add(self, clips: list[np.ndarray], group: str, kind: str) -> None:
        """Append ``clips``, all cut from the recording ``group``, of source ``kind``."""
        self.audio += clips
        self.groups += [group] * len(clips)
        self.kinds += [kind] * len(clips)


def cut_clips(y: np.ndarray, sr: int, rng: np.random.Generator,
              seconds: tuple[float, float] = CLIP_SECONDS) -> list[np.ndarray]:
    """Consecutive clips of random length in ``seconds`` (min, max) covering ``y`` (a short ``y`` is one clip)."""
    clips, start = [], 0
    while start < len(y):
        length = int(rng.uniform(*seconds) * sr)
        clips.append(y[start:start + length])
        start += length
    if len(clips) > 1 and len(clips[-1]) < min(seconds) * sr:   # a short tail joins its neighbour
        clips[-2:] = [np.concatenate(clips[-2:])]
    return clips


def collect_negatives(data_dir, cfg: FeatureConfig, seed: int, synthetic_per_kind: int = SYNTHETIC_PER_KIND,
                      noise_kinds: tuple[str, ...] | None = None,
                      synthetic_winds: list[np.ndarray] = (),
                      clip_seconds: tuple[float, float] = CLIP_SECONDS) -> Negatives:
    """Every negative clip for ``data_dir``: Noise/ recordings, Training/ negative folders, the synthetic bank.

    ``noise_kinds`` limits the Noise/ folders used (None: all); the synthetic
    bank is left out when ``synthetic_per_kind`` is 0. ``synthetic_winds``
    (recordings at ``cfg.sr``) are cut into clips like a Noise/ recording,
    of kind ``synthetic wind``. Recordings are cut, and synthetic clips drawn,
    ``clip_seconds`` (min, max) long.
    """
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    negatives = Negatives([], [], [])
    folders = sorted(d for d in (data_dir / "Noise").glob("*") if d.is_dir()) if (data_dir / "Noise").is_dir() else []
    folders = [d for d in folders if noise_kinds is None or d.name in noise_kinds]
    folders += [data_dir / "Training" / name for name in NEGATIVE_FOLDERS if (data_dir / "Training" / name).is_dir()]
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_audio_file(p)):
            try:
                y = load_audio(path, cfg.sr)
            except AudioError as e:
                warn(f"skipping negative {e}")
                continue
            negatives.add(cut_clips(y, cfg.sr, rng, clip_seconds) if folder.parent.name == "Noise" else [y],
                          str(path), folder.name)
    from .synthetic_noise import KINDS, synthetic_noise   # here: scipy.signal would slow every command's start
    for kind in KINDS if synthetic_per_kind else ():
        for i in range(synthetic_per_kind):
            negatives.add([synthetic_noise(kind, rng.uniform(*clip_seconds), cfg.sr, rng)], f"synthetic/{kind}/{i}",
                          f"synthetic {kind}")
    for i, wind in enumerate(synthetic_winds):
        negatives.add(cut_clips(wind, cfg.sr, rng, clip_seconds), f"synthetic/wind/{i}", "synthetic wind")
    return negatives


def played_at(y: np.ndarray, factor: float) -> np.ndarray:
    """``y`` played ``factor`` times as fast: every frequency times ``factor``, the length divided by it.

    Polyphase resampling (``scipy.signal.resample_poly``) by ``factor`` as a
    fraction with a denominator up to 16 (2: an octave up; 0.5: an octave down).
    """
    from fractions import Fraction

    from scipy.signal import resample_poly   # here: scipy.signal would slow every command's start
    ratio = Fraction(factor).limit_denominator(16)
    if ratio <= 0:
        raise ValueError(f"speed factor {factor} must be positive")
    return resample_poly(np.asarray(y, np.float32), ratio.denominator, ratio.numerator).astype(np.float32)


def threaded_map(fn, items: list) -> list:
    """``[fn(item) for item in items]``, computed on a thread per core.

    Resampling and log-Mel maps spend most of their time in scipy and numpy,
    which let other threads run meanwhile: the 948 shifted copies of an
    ``enhance.py`` training split took about 1.9 s instead of 3.5 s on 2
    cores, the same maps.
    """
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(fn, items))


def negative_clips(audio: list[np.ndarray], groups: list[str], cfg: FeatureConfig, label: int) -> Clips:
    """``audio`` as clips of label ``label`` with their log-Mel features; each ``groups`` entry is its file and hash."""
    x = (np.stack(threaded_map(lambda y: clip_features(y, cfg), audio)) if audio
         else np.zeros((0, cfg.n_frames, cfg.n_mels), np.float32))
    return Clips(x, np.full(len(audio), label), [Path(g) for g in groups], list(groups), audio)


def shifted_clips(clips: Clips, factors: tuple[float, ...], cfg: FeatureConfig, label: int) -> Clips:
    """Every clip of ``clips`` played at each of ``factors`` (:func:`played_at`), labelled ``label``."""
    if clips.audio is None:
        raise ValueError("--shifted-negatives needs the clips' audio, which this variant does not load")
    return negative_clips(threaded_map(lambda job: played_at(*job), [(y, f) for f in factors for y in clips.audio]),
                          [f"{SHIFTED_PREFIX}{f:g}/{h}" for f in factors for h in clips.hashes], cfg, label)


def shifted_mask(clips: Clips) -> np.ndarray:
    """Which of ``clips`` are :func:`shifted_clips` (known by their hash)."""
    return np.array([h.startswith(SHIFTED_PREFIX) for h in clips.hashes], bool)


def draws_per_epoch(clips: Clips) -> int:
    """How many examples an epoch of training on ``clips`` draws: every clip but the :func:`shifted_clips`.

    The shifted copies are variety among the negatives, drawn in their share
    of each epoch, not extra steps: with two speeds they would more than
    double an epoch (and a run) for the same number of passes over the animals.
    """
    return int(np.count_nonzero(~shifted_mask(clips)))


def epoch_draw(clips: Clips, rng: np.random.Generator, extra: int = 0) -> np.ndarray:
    """Indices of one epoch of ``clips`` in random order, without class balancing: :func:`draws_per_epoch` of them.

    Every clip once, but the negatives (the shifted copies' label): as many
    are drawn, without replacement, as there are besides the shifted copies,
    from all of them, so that the copies take turns within the negatives'
    share. ``extra`` examples beyond the clips (indices ``len(clips.y)`` on,
    such as fresh mixtures) join once each. Without shifted copies this is
    ``rng.permutation(len(clips.y) + extra)``.
    """
    n, shifted = len(clips.y), shifted_mask(clips)
    if not shifted.any():
        return rng.permutation(n + extra)
    negative = np.isin(clips.y, clips.y[shifted])
    drawn = rng.choice(np.flatnonzero(negative), np.count_nonzero(negative & ~shifted), replace=False)
    return rng.permutation(np.concatenate([np.flatnonzero(~negative), drawn, np.arange(n, n + extra)]))


def add_negatives(data: DataSplits, negatives: Negatives, cfg: FeatureConfig, design: str, seed: int,
                  val_size: float, shifted: tuple[float, ...] = ()) -> DataSplits:
    """``data`` with the negatives added to its training and validation splits.

    Negatives get label ``len(classes)`` in the ``uniform`` design (an extra
    label without an output: :func:`core.training.targets` turns it into the
    uniform target) and are the class ``background`` in the ``background``
    design. A ``Training/`` negative folder that :func:`core.dataset.load_splits`
    took for a class is removed from the classes (its clips are among the
    negatives), and Test keeps animals only. With ``shifted`` speed factors,
    every training and validation animal clip played at each of them
    (:func:`shifted_clips`) is a negative of its own split as well.
    """
    if design not in OUTLIER_DESIGNS[1:]:
        raise ValueError(f"unknown outlier design {design!r}")
    animals = [c for c in data.classes if c not in NEGATIVE_FOLDERS]
    names = np.asarray(data.classes)
    keep = {part: np.isin(names[getattr(data, part).y], animals) for part in ("train", "val", "test")}
    relabel = np.array([animals.index(c) if c in animals else -1 for c in data.classes])
    parts = {part: getattr(data, part).subset(np.flatnonzero(keep[part])) for part in keep}
    for clips in parts.values():
        clips.y = relabel[clips.y]
    classes = animals + ([BACKGROUND] if design == BACKGROUND else [])
    label = len(animals)
    is_val = group_split(np.asarray(negatives.kinds), negatives.groups, val_size, seed + 2)
    negative = negative_clips(negatives.audio, negatives.groups, cfg, label)
    train = concat(parts["train"], negative.subset(np.flatnonzero(~is_val)))
    val = concat(parts["val"], negative.subset(np.flatnonzero(is_val)))
    if shifted:
        train = concat(train, shifted_clips(parts["train"], shifted, cfg, label))
        val = concat(val, shifted_clips(parts["val"], shifted, cfg, label))
    return dataclasses.replace(data, train=train, val=val, test=parts["test"], classes=classes)


def concat(a: Clips, b: Clips) -> Clips:
    """Two sets of clips as one (audio kept only if both have it)."""
    audio = a.audio + b.audio if a.audio is not None and b.audio is not None else None
    return Clips(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), a.files + b.files, a.hashes + b.hashes,
                 audio)
