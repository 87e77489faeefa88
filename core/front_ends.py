"""Front ends: how a window of audio becomes a model's input, as the model's ``config.json`` names it.

- :class:`LogMel` (``"front_end": {"kind": "log_mel"}``, and every model whose
  config names no front end): the z-normalised log-Mel spectrogram of
  :mod:`core.features`, (500 frames, 128 mels), its parameters under ``"features"``.
- :class:`MFCC` (``{"kind": "mfcc", "n_mfcc": 40, "delta_order": 2,
  "delta_width": 9}``, the log-Mel parameters under ``"features"``): the DCT
  of the same log-Mel map before its z-normalisation, with deltas
  (:func:`core.features.mfcc_features`): (500 frames, 120), zero frames after
  the clip's sound.
- :class:`BackboneEmbeddings` (``{"kind": "backbone", "backbone": ...}``): a
  frozen pretrained embedder (:mod:`core.backbones`) run on its windows (3 s
  for BirdNET) across the analysis window: (chunks, dim), zero rows after the
  last chunk. The model pools them.

What every front end has, so that training, prediction, live use, export and
the open-set statistics never ask which one it is:

- ``cfg``: the :class:`~core.features.FeatureConfig` clips are decoded and cut
  with (``sr``, ``window_seconds``); a log-Mel model's features too;
- ``input_shape`` and ``input_name``: the model's (and exported graphs') input;
- ``features(audio)``: the input for one window of audio at ``cfg.sr``;
- ``window_features(windows, starts)``: the inputs of successive windows of
  one recording, as ``features`` gives them (the spectral front ends compute
  the STFT frames that overlapping windows share once);
- ``featurize(clips, cache_dir)``: the input of every clip of a split,
  through the on-disk cache;
- ``load()``: loads what ``features`` needs (a backbone's network);
- ``config()``: its entries in ``config.json``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np
from tqdm.auto import tqdm

from .backbones import backbone_class, cut_windows, load_backbone, window_starts
from .dataset import Clips, audio_hash, cached_audio
from .features import (FeatureCache, FeatureConfig, MFCCConfig, clip_features, log_mels, mfcc_features,
                       mfcc_of_log_mel, normalize_frames)

EMBEDDINGS = "embeddings"   # the cache's folder for backbone embeddings
MFCCS = "mfcc"              # and for MFCCs


class LogMel:
    """The log-Mel front end of :mod:`core.features` (features are computed, and cached, as clips load)."""
    kind = "log_mel"
    input_name = "log_mel"
    needs_audio = False   # the dataset loader computes its features

    def __init__(self, cfg: FeatureConfig | None = None):
        self.cfg = cfg or FeatureConfig()
        self.input_shape = (self.cfg.n_frames, self.cfg.n_mels)

    def features(self, audio: np.ndarray) -> np.ndarray:
        return clip_features(audio, self.cfg)

    def of_log_mel(self, db: np.ndarray) -> np.ndarray:
        """The features of the window whose ``features.log_mel`` map is ``db``."""
        return normalize_frames(db, self.cfg.n_frames)

    def window_features(self, windows: list[np.ndarray], starts: list[int]) -> np.ndarray:
        return stacked_log_mels(windows, starts, self.cfg, self.of_log_mel)

    def featurize(self, clips: Clips, cache_dir=None) -> Clips:
        return clips

    def load(self) -> LogMel:
        return self

    def config(self) -> dict:
        return {"front_end": {"kind": self.kind}, "features": self.cfg.to_dict()}


def stacked_log_mels(windows: list[np.ndarray], starts: list[int], cfg: FeatureConfig, finish) -> np.ndarray:
    """``finish(db)`` stacked for the log-Mel map of each of successive windows of one recording (from sample ``starts``).

    Each window is cut to ``cfg``'s span first, as :func:`~core.features.clip_features` does.
    """
    return np.stack([finish(db) for db in log_mels([w[:cfg.window_samples] for w in windows], starts, cfg)])


def cached_features(features, shape: tuple, audio: list, cache_dir, kind: str, folder: str, tag: str = "clean",
                    transform=None, desc: str = "features") -> np.ndarray:
    """(n, *shape) ``features(clip)`` of each clip of ``audio``, through the cache under ``kind``/``folder``.

    ``transform(audio, rng)``, if given, changes a clip before its features
    are computed (an augmentation draw), and ``tag`` names it in the cache
    key. Its generator is seeded by the clip's content and ``tag``, so a draw
    is the same in every run and every seed can reuse it. Each clip is
    rounded to float16 first, as the audio cache kept clips until 2026-12-05:
    the MFCC and transfer figures of the README were measured so.
    """
    cache = FeatureCache(cache_dir) if cache_dir else None
    out = np.zeros((len(audio), *shape), np.float32)
    for i, y in enumerate(tqdm(audio, desc=desc, unit="clip", disable=None)):
        y = np.asarray(y, np.float16).astype(np.float32)
        digest = audio_hash(y)
        x = cache.get(kind, folder, digest) if cache else None
        if x is None:
            if transform is not None:
                y = transform(y, np.random.default_rng(int(hashlib.sha1(f"{digest}/{tag}".encode()).hexdigest(), 16)))
            x = features(y)
            if cache:
                cache.put(kind, folder, digest, x)
        out[i] = x
    return out


def split_audio(clips: Clips, cfg: FeatureConfig, cache_dir=None) -> list:
    """The audio of every clip of a split: its own, or (the loader keeps none for Test) from the audio cache.

    A clip missing from the cache is decoded from its file (and cached).
    """
    if clips.audio is not None:
        return clips.audio
    cache = FeatureCache(cache_dir) if cache_dir else None
    return [cached_audio(f, digest, cfg, cache) for f, digest in zip(clips.files, clips.hashes)]


class MFCC:
    """MFCCs of the log-Mel map, with deltas (:func:`core.features.mfcc_features`): (frames, n_features).

    Computed from each clip's audio after loading (the dataset loader's
    cached log-Mel maps are z-normalised per clip and stored as float16, so
    the DCT of those would be neither librosa's MFCCs nor what a single
    window at inference gives), and cached in ``<cache>/mfcc/<key>/`` by
    the clip's audio, so a second run computes nothing.
    """
    kind = "mfcc"
    input_name = "mfcc"
    needs_audio = True   # computed from the decoded audio, after loading

    def __init__(self, params: MFCCConfig | None = None, cfg: FeatureConfig | None = None):
        self.params = params or MFCCConfig()
        self.cfg = cfg or FeatureConfig()
        if self.cfg.scaling != "db":
            raise ValueError(f"MFCCs are of the dB map: scaling {self.cfg.scaling!r} has none")
        if self.params.n_mfcc > self.cfg.n_mels:
            raise ValueError(f"n_mfcc {self.params.n_mfcc}: at most n_mels ({self.cfg.n_mels}) coefficients")
        self.input_shape = (self.cfg.n_frames, self.params.n_features)

    def features(self, audio: np.ndarray) -> np.ndarray:
        return mfcc_features(np.asarray(audio, np.float32), self.cfg, self.params)

    def of_log_mel(self, db: np.ndarray) -> np.ndarray:
        """The features of the window whose ``features.log_mel`` map is ``db``."""
        return mfcc_of_log_mel(db, self.cfg, self.params)

    def window_features(self, windows: list[np.ndarray], starts: list[int]) -> np.ndarray:
        return stacked_log_mels(windows, starts, self.cfg, self.of_log_mel)

    def key(self) -> str:
        """The cache folder of these features: a hash of every parameter."""
        return hashlib.sha1(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:12]

    def featurize(self, clips: Clips, cache_dir=None) -> Clips:
        """``clips`` with their features replaced by MFCCs, through the cache."""
        audio = split_audio(clips, self.cfg, cache_dir)
        return dataclasses.replace(clips, x=cached_features(self.features, self.input_shape, audio, cache_dir,
                                                            MFCCS, self.key(), desc="MFCC"))

    def load(self) -> MFCC:
        return self

    def config(self) -> dict:
        return {"front_end": {"kind": self.kind, **self.params.to_dict()}, "features": self.cfg.to_dict()}


def clip_config(sr: int) -> FeatureConfig:
    """The log-Mel parameters scaled to ``sr``: same 500 frames, same 16 s span (a backbone's clip loading)."""
    base = FeatureConfig()
    scale = sr / base.sr
    return FeatureConfig(sr=sr, n_fft=round(base.n_fft * scale), hop_length=round(base.hop_length * scale))


class BackboneEmbeddings:
    """A frozen backbone's embeddings of the windows ("chunks") of an analysis window: (chunks, dim).

    Clips are decoded at the backbone's rate and cut to the 16 s of a log-Mel
    window (``cfg``; the dataset loader also caches that rate's log-Mel, which
    nothing here uses). The chunks are the backbone's windows every
    ``hop_seconds`` (:func:`core.backbones.window_starts`); an analysis window
    shorter than the full span leaves zero rows after its last chunk, which a
    model's masked pooling skips.

    Embeddings are cached in ``<cache>/embeddings/<key>/``, keyed by this
    front end's parameters, the clip's audio and the augmentation draw, so a
    second run embeds nothing.
    """
    kind = "backbone"
    input_name = "chunk_embeddings"
    needs_audio = True   # embedded from the decoded audio, after loading

    def __init__(self, backbone: str, hop_seconds: float | None = None, window_seconds: float | None = None):
        self.spec = backbone_class(backbone)
        self.hop_seconds = float(hop_seconds or self.spec.hop_seconds)
        self.cfg = clip_config(self.spec.sample_rate)
        if window_seconds is not None and abs(window_seconds - self.cfg.window_seconds) > 1e-6:
            raise ValueError(f"window_seconds {window_seconds}: this toolkit cuts {self.cfg.window_seconds:g} s windows")
        n_chunks = len(window_starts(self.cfg.window_samples, self.spec.window_samples(),
                                     self.spec.hop_samples(self.hop_seconds)))
        self.input_shape = (n_chunks, self.spec.dim)

    @functools.cached_property
    def backbone(self):
        return load_backbone(self.spec.name)

    def load(self) -> BackboneEmbeddings:
        self.backbone   # noqa: B018  loads the network now: a missing extra fails here, with one line
        return self

    def features(self, audio: np.ndarray) -> np.ndarray:
        """(chunks, dim) embeddings of one window of audio at ``cfg.sr``."""
        chunks = cut_windows(np.asarray(audio, np.float32)[:self.cfg.window_samples], self.spec.window_samples(),
                             self.spec.hop_samples(self.hop_seconds))
        out = np.zeros(self.input_shape, np.float32)
        out[:len(chunks)] = self.backbone.embed(chunks)
        return out

    def window_features(self, windows: list[np.ndarray], starts: list[int]) -> np.ndarray:
        return np.stack([self.features(w) for w in windows])

    def key(self, tag: str = "clean") -> str:
        """The cache folder of this front end's embeddings under augmentation ``tag``."""
        text = json.dumps({**self.config()["front_end"], "tag": tag}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def embed_clips(self, audio: list, cache_dir=None, tag: str = "clean", transform=None,
                    desc: str = "embeddings") -> np.ndarray:
        """(n, chunks, dim) features of each clip of ``audio``, through the cache (see :func:`cached_features`)."""
        return cached_features(self.features, self.input_shape, audio, cache_dir, EMBEDDINGS, self.key(tag), tag,
                               transform, desc)

    def featurize(self, clips: Clips, cache_dir=None, desc: str = "embeddings") -> Clips:
        """``clips`` with their features replaced by this front end's clean embeddings."""
        return dataclasses.replace(clips, x=self.embed_clips(split_audio(clips, self.cfg, cache_dir), cache_dir,
                                                             desc=desc))

    def config(self) -> dict:
        return {"front_end": {"kind": self.kind, "backbone": self.spec.name, "hop_seconds": self.hop_seconds,
                              "window_seconds": self.cfg.window_seconds, "licence": self.spec.licence_name}}


def front_end_of(config: dict):
    """The front end a model's ``config.json`` names (log-Mel when it names none); loads no network.

    Raises ValueError, KeyError or TypeError for an entry this toolkit cannot read, and
    :class:`core.backbones.BackboneUnavailable` for an unknown backbone.
    """
    spec = config.get("front_end", {"kind": LogMel.kind})
    if spec["kind"] == LogMel.kind:
        return LogMel(FeatureConfig.from_dict(config["features"]))
    if spec["kind"] == MFCC.kind:
        return MFCC(MFCCConfig(**{k: v for k, v in spec.items() if k != "kind"}),
                    FeatureConfig.from_dict(config["features"]))
    if spec["kind"] == BackboneEmbeddings.kind:
        return BackboneEmbeddings(spec["backbone"], spec["hop_seconds"], spec["window_seconds"])
    raise ValueError(f"unknown front end {spec['kind']!r}")
