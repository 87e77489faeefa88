"""Where live audio comes from: a microphone (PyAudio) or a recording, behind one small interface.

A source has a ``rate`` (Hz) and a ``name``, and its :meth:`AudioSource.chunks`
yields mono float32 chunks at that rate until the stream ends; ``close()``
releases it. Anything with those three members can feed the live pipeline, so
tests drive it with a file or a fake device instead of hardware.

PyAudio is imported only when a microphone is opened, so a machine without it
(or without a sound card) still runs the file source.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .audio import stream_audio, warn

PA_INPUT_OVERFLOWED = -9981   # PortAudio's paInputOverflowed: input arrived faster than it was read


class SourceUnavailable(RuntimeError):
    """No microphone can be used (PyAudio missing, no input device, open refused); ``str()`` is one line."""


class SourceLost(RuntimeError):
    """A source that stopped mid-stream, e.g. an unplugged device; ``str()`` is one line."""


class AudioSource:
    """The interface: ``rate``, ``name``, ``chunks()`` and ``close()`` (also a context manager)."""
    rate: int
    name: str
    overflows: int = 0   # input overflows survived (audio the device dropped)

    def chunks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source; safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileSource(AudioSource):
    """A recording streamed in chunks, in real time (paced like a microphone) or as fast as possible.

    The file is decoded and resampled to ``rate`` by the toolkit's own reader
    (:func:`audio.stream_audio`), the very path ``predict.py`` reads files
    through, so both see identical samples.
    """

    def __init__(self, path, rate: int = 16000, realtime: bool = True, chunk_seconds: float = 0.1):
        self.path, self.rate, self.realtime, self.chunk_seconds = Path(path), rate, realtime, chunk_seconds
        self.name = str(path)

    def chunks(self) -> Iterator[np.ndarray]:
        start, sent = time.monotonic(), 0
        for chunk in stream_audio(self.path, self.rate, block_seconds=self.chunk_seconds):
            sent += len(chunk)
            if self.realtime:   # a microphone delivers a chunk only once its last sample was heard
                time.sleep(max(0.0, start + sent / self.rate - time.monotonic()))
            yield chunk


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null: PortAudio's ALSA/JACK probing prints dozens of lines there."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_pyaudio():
    """``(pyaudio module, PyAudio instance)``; :class:`SourceUnavailable` if PyAudio is not installed."""
    try:
        import pyaudio
    except ImportError:
        raise SourceUnavailable("PyAudio is not installed") from None
    with quiet_stderr():
        return pyaudio, pyaudio.PyAudio()


def input_devices(pa) -> list[dict]:
    """PortAudio's device-info dicts of every device that can record."""
    infos = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
    return [d for d in infos if d.get("maxInputChannels", 0) > 0]


def list_input_devices() -> list[dict]:
    """The input devices of this machine (index, name, maxInputChannels, defaultSampleRate, ...)."""
    _, pa = open_pyaudio()
    try:
        return input_devices(pa)
    finally:
        pa.terminate()


def pick_device(pa, device: str | int | None) -> dict:
    """The device to record from: ``device`` as an index or a name fragment, else the default input.

    Raises :class:`SourceUnavailable` when there is no input device at all and
    :class:`ValueError` when ``device`` names none of them.
    """
    devices = input_devices(pa)
    if not devices:
        raise SourceUnavailable("no audio input device found")
    if device is None:
        try:
            return pa.get_default_input_device_info()
        except OSError:   # no default configured: any device that records will do
            return devices[0]
    matches = ([d for d in devices if str(d["index"]) == str(device)]
               or [d for d in devices if str(device).lower() in d["name"].lower()])
    if not matches:
        raise ValueError(f"no input device matches {device!r} (see --list-devices)")
    return matches[0]


class MicrophoneSource(AudioSource):
    """Mono float32 chunks from an input device at its native sample rate.

    Opening raises :class:`SourceUnavailable` (PyAudio missing, no device, the
    stream refused, e.g. permission denied). While streaming, an input overflow
    is counted and survived; any other device error ends the stream with
    :class:`SourceLost`.
    """

    def __init__(self, device: str | int | None = None, chunk_seconds: float = 0.1):
        pyaudio, self._pa = open_pyaudio()
        self._stream = None
        try:
            info = pick_device(self._pa, device)
            self.rate = int(info["defaultSampleRate"])
            self.name = f"{info['name']} (device {info['index']}, {self.rate} Hz)"
            self.chunk_frames = max(1, round(chunk_seconds * self.rate))
            with quiet_stderr():
                self._stream = self._pa.open(format=pyaudio.paFloat32, channels=1, rate=self.rate, input=True,
                                             input_device_index=info["index"],
                                             frames_per_buffer=self.chunk_frames)
        except OSError as e:
            self.close()
            raise SourceUnavailable(f"cannot open input device: {describe(e)}") from None
        except BaseException:
            self.close()
            raise

    def chunks(self) -> Iterator[np.ndarray]:
        while True:
            try:
                # Without the exception an overflow just returns the data read after it;
                # some backends raise it anyway, which is survived the same way.
                data = self._stream.read(self.chunk_frames, exception_on_overflow=False)
            except OSError as e:
                if e.errno != PA_INPUT_OVERFLOWED:
                    raise SourceLost(f"input device {self.name} stopped mid-stream: {describe(e)}") from None
                if not self.overflows:
                    warn("input overflow: the machine fell behind the microphone and audio was dropped")
                self.overflows += 1
                continue
            yield np.frombuffer(data, np.float32)

    def close(self) -> None:
        """Stop and close the stream and PortAudio, ignoring errors from a device already gone."""
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.stop_stream()
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def describe(error: OSError) -> str:
    """PyAudio's ``OSError(code, text)`` as ``'text [code]'`` (other OSErrors as they print)."""
    if error.errno is not None and error.strerror:
        return f"{error.strerror} [{error.errno}]"
    return str(error) or type(error).__name__
