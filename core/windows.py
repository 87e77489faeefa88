"""Analysis windows: how a recording of any length, or a live stream, is cut for the model.

One mechanism serves both: :class:`SlidingWindows` takes audio in blocks of
any size and emits each window the moment its last sample arrives;
:func:`iter_windows` feeds it a file's blocks, ``live_predict.py`` a
microphone's. So a stream and a file of the same audio are cut at the same
samples, and memory stays bounded by one window whatever the length.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .audio import check_clip, stream_audio
from .features import FeatureConfig


class RingBuffer:
    """The latest ``capacity`` samples of a stream, in a fixed array that is never reallocated."""

    def __init__(self, capacity: int):
        self.data = np.zeros(capacity, np.float32)
        self.end = 0   # write position: data[end - 1] is the newest sample

    def write(self, x: np.ndarray) -> None:
        x = x[-len(self.data):]
        first = min(len(x), len(self.data) - self.end)
        self.data[self.end:self.end + first] = x[:first]
        self.data[:len(x) - first] = x[first:]
        self.end = (self.end + len(x)) % len(self.data)

    def latest(self, n: int) -> np.ndarray:
        """A copy of the newest ``n`` samples, oldest first (``n`` at most the capacity)."""
        return np.roll(self.data, -self.end)[len(self.data) - n:]


class SlidingWindows:
    """Cut a stream into windows of ``window`` samples starting every ``hop`` samples.

    Windows span [0, W], [h, h + W], ...; each is emitted the moment its last
    sample arrives, so it is always the newest W samples of the ring buffer. At
    the end of the stream :meth:`finish` emits the whole stream if it was
    shorter than one window, else a last shorter window reaching the end.
    """

    def __init__(self, window: int, hop: int):
        if window <= 0 or hop <= 0:
            raise ValueError("window and hop must be positive")
        self.window, self.hop = window, hop
        self.ring = RingBuffer(window)
        self.total = 0        # samples received
        self.next_start = 0   # start sample of the next window
        self.covered = 0      # end sample of the last window emitted

    def push(self, block: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start_sample, end_sample, audio)`` for every window that ``block`` completes."""
        while len(block):
            # Write only up to the next window's end, so that window is exactly the ring's newest samples.
            take = min(len(block), self.next_start + self.window - self.total)
            self.ring.write(block[:take])
            self.total += take
            block = block[take:]
            if self.total == self.next_start + self.window:
                yield self.next_start, self.total, self.ring.latest(self.window)
                self.covered, self.next_start = self.total, self.next_start + self.hop

    def finish(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield the final partial window: the whole stream if no window was full, else the tail."""
        if self.covered == 0 and self.total > 0:
            yield 0, self.total, self.ring.latest(self.total)
        elif 0 < self.covered < self.total and self.next_start < self.total:
            yield self.next_start, self.total, self.ring.latest(self.total - self.next_start)


def iter_windows(path, cfg: FeatureConfig, window_seconds: float | None = None,
                 hop_seconds: float | None = None) -> Iterator[tuple[float, float, np.ndarray]]:
    """Yield (start_s, end_s, audio) analysis windows of a recording of any length.

    Windows are ``window_seconds`` long (default: the model's 500-frame span) and
    start every ``hop_seconds`` (default: half a window); the last one reaches
    the end of the file. A file shorter than one window is one window, and is
    checked like a clip (:func:`core.audio.check_clip`: not empty, silent or
    too short). Audio is streamed, so memory stays bounded by one window plus
    one read block even for an hour-long file.
    """
    window = int(round((window_seconds or cfg.window_seconds) * cfg.sr))
    hop = int(round((hop_seconds or (window / cfg.sr) / 2) * cfg.sr))
    windows = SlidingWindows(window, hop)
    for block in stream_audio(path, cfg.sr, block_seconds=max(window, hop) / cfg.sr):
        for start, end, audio in windows.push(block):
            yield start / cfg.sr, end / cfg.sr, audio
    if windows.covered == 0:
        check_clip(windows.ring.latest(windows.total), cfg.sr, path)
    for start, end, audio in windows.finish():
        yield start / cfg.sr, end / cfg.sr, audio
