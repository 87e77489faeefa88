"""A tiny deterministic backbone for fast tests, registered with :func:`registered` while a test needs it."""
import contextlib

import numpy as np
import pytest

from core.backbones import BACKBONES, Backbone


class FakeBackbone(Backbone):
    """Log energies of 8 frequency bands of each 0.5 s window at 16 kHz; counts the windows it embeds."""
    name = "fake-test"
    sample_rate = 16000
    window_seconds = 0.5
    hop_seconds = 0.5
    dim = 8
    blocks = (4, 4)
    licence_name = "test licence"
    windows_embedded = 0   # over every instance: a warm cache must leave it unchanged

    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        FakeBackbone.windows_embedded += len(waveforms)
        power = np.abs(np.fft.rfft(np.asarray(waveforms, np.float64), axis=1)) ** 2
        return np.log1p(np.stack([band.sum(axis=1) for band in np.array_split(power, self.dim, axis=1)], axis=1)
                        ).astype(np.float32)

    def licence(self) -> str:
        return "Fake licence text: for tests only."


@contextlib.contextmanager
def registered():
    """:class:`FakeBackbone` in the backbone registry for the duration of a ``with`` block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BACKBONES, FakeBackbone.name, FakeBackbone)
        yield FakeBackbone
