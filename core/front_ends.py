"""Front ends: how a window of audio becomes a model's input, as the model's ``config.json`` names it.

- :class:`LogMel` (``"front_end": {"kind": "log_mel"}``, and every model whose
  config names no front end): the z-normalised log-Mel spectrogram of
  :mod:`core.features`, (500 frames, 128 mels), its parameters under ``"features"``.
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

from .audio import load_audio
from .backbones import backbone_class, cut_windows, load_backbone, window_starts
from .dataset import Clips, audio_hash
from .features import FeatureCache, FeatureConfig, clip_features

EMBEDDINGS = "embeddings"   # the cache's folder for backbone embeddings


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

    def featurize(self, clips: Clips, cache_dir=None) -> Clips:
        return clips

    def load(self) -> LogMel:
        return self

    def config(self) -> dict:
        return {"front_end": {"kind": self.kind}, "features": self.cfg.to_dict()}


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

    def key(self, tag: str = "clean") -> str:
        """The cache folder of this front end's embeddings under augmentation ``tag``."""
        text = json.dumps({**self.config()["front_end"], "tag": tag}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def embed_clips(self, audio: list, cache_dir=None, tag: str = "clean", transform=None,
                    desc: str = "embeddings") -> np.ndarray:
        """(n, chunks, dim) features of each clip of ``audio``, through the cache.

        ``transform(audio, rng)``, if given, changes a clip before it is
        embedded (an augmentation draw), and ``tag`` names it in the cache key.
        Its generator is seeded by the clip's content and ``tag``, so a draw
        is the same in every run and every seed can reuse it. Clips arrive as
        float32 from a fresh decode and as float16 from the audio cache, so
        each is rounded to float16 first: both runs key, and embed, the same
        samples.
        """
        cache = FeatureCache(cache_dir) if cache_dir else None
        folder = self.key(tag)
        out = np.zeros((len(audio), *self.input_shape), np.float32)
        for i, y in enumerate(tqdm(audio, desc=desc, unit="clip", disable=None)):
            y = np.asarray(y, np.float16).astype(np.float32)
            digest = audio_hash(y)
            x = cache.get(EMBEDDINGS, folder, digest) if cache else None
            if x is None:
                if transform is not None:
                    y = transform(y, np.random.default_rng(int(hashlib.sha1(f"{digest}/{tag}".encode()).hexdigest(), 16)))
                x = self.features(y)
                if cache:
                    cache.put(EMBEDDINGS, folder, digest, x)
            out[i] = x
        return out

    def featurize(self, clips: Clips, cache_dir=None, desc: str = "embeddings") -> Clips:
        """``clips`` with their features replaced by this front end's clean embeddings.

        Clips loaded without their audio (the dataset loader keeps none for
        Test) are decoded again from their files.
        """
        audio = clips.audio if clips.audio is not None else [
            load_audio(f, self.cfg.sr, self.cfg.window_seconds) for f in clips.files]
        return dataclasses.replace(clips, x=self.embed_clips(audio, cache_dir, desc=desc))

    def config(self) -> dict:
        return {"front_end": {"kind": self.kind, "backbone": self.spec.name, "hop_seconds": self.hop_seconds,
                              "window_seconds": self.cfg.window_seconds, "licence": self.spec.licence_name}}


def front_end_of(config: dict):
    """The front end a model's ``config.json`` names (log-Mel when it names none); loads no network.

    Raises ValueError or KeyError for an entry this toolkit cannot read, and
    :class:`core.backbones.BackboneUnavailable` for an unknown backbone.
    """
    spec = config.get("front_end", {"kind": LogMel.kind})
    if spec["kind"] == LogMel.kind:
        return LogMel(FeatureConfig.from_dict(config["features"]))
    if spec["kind"] == BackboneEmbeddings.kind:
        return BackboneEmbeddings(spec["backbone"], spec["hop_seconds"], spec["window_seconds"])
    raise ValueError(f"unknown front end {spec['kind']!r}")
