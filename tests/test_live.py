"""live_predict.py: the streaming pipeline, driven by a file source and by a fake PyAudio device."""
import json
import re
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write_wav

import live_predict
import predict
from core import audio_sources
from core.features import FeatureConfig
from core.windows import SlidingWindows, iter_windows

HOP_LINE = re.compile(r"^\s+([\d.]+)-\s*([\d.]+) s\s+(\S+)\s+([\d.]+)?", re.M)


def hops(text):
    """(start, end, label, confidence or None) of each hop line printed by live_predict or predict --timeline."""
    return [(float(a), float(b), label, float(c) if c else None) for a, b, label, c in HOP_LINE.findall(text)]


def animal_sequence(sr):
    """6.3 s of three synthetic 'animals' one after another, at a rate the pipeline must resample."""
    return np.concatenate([tone("moo", 2.0, sr), tone("chirp", 2.3, sr, seed=1), tone("bark", 2.0, sr, seed=2)])


@pytest.fixture(scope="module")
def sequence_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("live") / "sequence.wav", animal_sequence(22050), 22050)


# ---------------------------------------------------------------- a fake PyAudio

class FakeStream:
    """A PyAudio input stream replaying ``signal``; ``events`` maps a read number to the exception it raises."""

    def __init__(self, signal, events=None):
        self.signal, self.events, self.reads, self.pos, self.closed = signal, events or {}, 0, 0, False

    def read(self, frames, exception_on_overflow=True):
        assert exception_on_overflow is False, "overflow must not lose the data read"
        self.reads += 1
        if self.reads in self.events:
            raise self.events[self.reads]
        chunk = self.signal[self.pos:self.pos + frames]
        self.pos += frames
        return np.pad(chunk, (0, frames - len(chunk))).astype(np.float32).tobytes()

    def stop_stream(self):
        if self.closed:
            raise OSError(-9988, "Stream closed")

    def close(self):
        self.closed = True


def fake_pyaudio(monkeypatch, devices=({"name": "Fake USB mic", "rate": 44100},), stream=None, open_error=None):
    """Install a fake ``pyaudio`` module; returns its single PyAudio instance to inspect afterwards."""
    infos = [{"index": i, "name": d["name"], "maxInputChannels": 1, "defaultSampleRate": float(d["rate"])}
             for i, d in enumerate(devices)]

    class PyAudio:
        opened, terminated = None, False

        def get_device_count(self):
            return len(infos)

        def get_device_info_by_index(self, i):
            return infos[i]

        def get_default_input_device_info(self):
            if not infos:
                raise OSError(-9996, "No Default Input Device Available")
            return infos[0]

        def open(self, **kwargs):
            self.opened = kwargs
            if open_error:
                raise open_error
            return stream

        def terminate(self):
            self.terminated = True

    pa = PyAudio()
    monkeypatch.setitem(sys.modules, "pyaudio", types.SimpleNamespace(paFloat32=1, PyAudio=lambda: pa))
    return pa


def live(model_dir, *args):
    """Run live_predict in-process; returns the SystemExit message, or None after a clean end."""
    try:
        live_predict.main(["--model-dir", str(model_dir), "--no-realtime", *map(str, args)])
    except SystemExit as e:
        return e.code
    return None


# ---------------------------------------------------------------- windows and file streaming

@pytest.mark.parametrize("seconds, window, hop, chunk", [
    (3.3, 1.0, 0.25, 0.05), (3.3, 1.0, 0.3, 0.7), (3.3, 0.5, 0.8, 0.1), (0.7, 1.0, 0.5, 0.1), (2.0, 1.0, 0.5, 0.3)])
def test_windows_match_iter_windows_sample_for_sample(tmp_path, seconds, window, hop, chunk):
    """Any chunking of the stream gives iter_windows' windows: same spans, identical samples, final partial one."""
    cfg = FeatureConfig()
    path = write_wav(tmp_path / "x.wav", tone("chirp", seconds, 22050), 22050)
    expected = list(iter_windows(path, cfg, window, hop))
    windows = SlidingWindows(int(round(window * cfg.sr)), int(round(hop * cfg.sr)))
    got = [w for c in audio_sources.FileSource(path, realtime=False, chunk_seconds=chunk).chunks()
           for w in windows.push(c)] + list(windows.finish())
    assert [(round(a * cfg.sr), round(b * cfg.sr)) for a, b, _ in expected] == [(a, b) for a, b, _ in got]
    for (_, _, want), (_, _, have) in zip(expected, got):
        np.testing.assert_array_equal(want, have)


def test_file_mode_matches_predict_timeline(trained_model_dir, sequence_wav, capsys):
    flags = ["--window-seconds", "2.5", "--hop-seconds", "0.5"]
    assert live(trained_model_dir, "--file", sequence_wav, "--smooth", "1", "--gate-db", "off", *flags) is None
    live_hops = hops(capsys.readouterr().out)
    predict.main(["--file", str(sequence_wav), "--model-dir", str(trained_model_dir), "--timeline", *flags])
    predicted = hops(capsys.readouterr().out)
    assert len(live_hops) == 9 and live_hops[-1][:2] == (4.0, 6.3)
    assert [h[:3] for h in live_hops] == [h[:3] for h in predicted]
    # Probabilities agree up to batch-size rounding in the model (predict.py classifies 16 windows at once).
    assert [h[3] for h in live_hops] == pytest.approx([h[3] for h in predicted], abs=0.011)


def test_seconds_stops_after_that_much_audio(trained_model_dir, sequence_wav, capsys):
    assert live(trained_model_dir, "--file", sequence_wav, "--seconds", "3", "--window-seconds", "2.5") is None
    out, err = capsys.readouterr()
    assert [h[:2] for h in hops(out)] == [(0.0, 2.5), (0.5, 3.0)]
    assert "done after 3.0 s of audio: 2 hops" in err


def test_realtime_file_is_paced_like_a_microphone(tmp_path):
    path = write_wav(tmp_path / "x.wav", tone("moo", 0.6))
    t0 = time.monotonic()
    n = sum(len(c) for c in audio_sources.FileSource(path, realtime=True, chunk_seconds=0.1).chunks())
    assert n == 9600 and time.monotonic() - t0 >= 0.55


def test_missing_file_is_a_one_line_error(trained_model_dir, tmp_path):
    assert live(trained_model_dir, "--file", tmp_path / "nope.wav") == f"error: {tmp_path / 'nope.wav'}: no such file"


# ---------------------------------------------------------------- smoothing and the silence gate

class StubClassifier:
    """Hands out preset probabilities (and OOD scores), one row per window, so decisions can be checked exactly."""
    cfg, classes = FeatureConfig(), ["cat", "dog"]
    multi_label = False   # as a WindowClassifier: one label per hop

    def __init__(self, *rows, scores=None, threshold=0.5):
        self.rows = [np.array(r, np.float32) for r in rows]
        self.scores, self.threshold = None if scores is None else list(scores), threshold

    def analyse_audio(self, windows):
        return self.rows.pop(0)[None], None if self.scores is None else np.array([self.scores.pop(0)])

    def decide(self, probs, ood_score=None):
        if ood_score is not None and ood_score > self.threshold:
            return "unknown", float(probs.max())
        return self.classes[int(probs.argmax())], float(probs.max())


def decisions(clf, signal, smooth, gate_db=-50.0):
    pipeline = live_predict.LivePipeline(clf, 16000, 1.0, 0.5, smooth, gate_db)
    out = pipeline.feed(signal) + pipeline.finish()
    return [(h.end, h.label, None if h.confidence is None else round(h.confidence, 3)) for h in out]


def test_smoothing_averages_the_last_n_hops():
    rows = [(0.9, 0.1), (0.4, 0.6), (0.4, 0.6), (0.2, 0.8)]
    loud = tone("bark", 2.5)
    assert decisions(StubClassifier(*rows), loud, smooth=1) == [
        (1.0, "cat", 0.9), (1.5, "dog", 0.6), (2.0, "dog", 0.6), (2.5, "dog", 0.8)]
    assert decisions(StubClassifier(*rows), loud, smooth=3) == [
        (1.0, "cat", 0.9), (1.5, "cat", 0.65), (2.0, "cat", 0.567), (2.5, "dog", 0.667)]


def test_unknown_follows_the_smoothed_ood_score():
    rows = [(0.9, 0.1)] * 4
    loud = tone("bark", 2.5)
    # scores 0.2, 0.9, 0.9, 0.1: one odd window alone (mean 0.55 over two) already tips it, as does the next
    assert decisions(StubClassifier(*rows, scores=[0.2, 0.9, 0.9, 0.1]), loud, smooth=2) == [
        (1.0, "cat", 0.9), (1.5, "unknown", 0.9), (2.0, "unknown", 0.9), (2.5, "cat", 0.9)]
    assert decisions(StubClassifier(*rows, scores=[0.2, 0.9, 0.3, 0.1]), loud, smooth=3) == [
        (1.0, "cat", 0.9), (1.5, "unknown", 0.9), (2.0, "cat", 0.9), (2.5, "cat", 0.9)]


def test_silence_gate_reports_silence_and_restarts_smoothing():
    signal = np.concatenate([tone("moo", 1.0), np.zeros(16000, np.float32), tone("moo", 1.0)])
    got = decisions(StubClassifier((0.9, 0.1), (0.9, 0.1), (0.2, 0.8), (0.2, 0.8)), signal, smooth=3)
    # Windows ending at 2.0 s hold only silence; after it, the new sound is not averaged with the old.
    assert got == [(1.0, "cat", 0.9), (1.5, "cat", 0.9), (2.0, "silence", None), (2.5, "dog", 0.8),
                   (3.0, "dog", 0.8)]
    everything = decisions(StubClassifier(*[(0.5, 0.5)] * 5), signal, smooth=1, gate_db=float("-inf"))
    assert "silence" not in [label for _, label, _ in everything]


def test_level_meter_spans_minus_60_to_0_dbfs():
    assert live_predict.meter(-120).startswith("[....................]")
    assert live_predict.meter(-30).startswith("[##########..........] -30 dBFS")
    assert live_predict.meter(0).startswith("[####################]")


# ---------------------------------------------------------------- the microphone path, with a fake device

def test_device_overflow_is_survived_and_a_lost_device_stops_cleanly(trained_model_dir, monkeypatch, capsys):
    reads_per_second = 20   # 0.05 s chunks
    stream = FakeStream(tone("moo", 5.0, 44100), events={
        20: OSError(audio_sources.PA_INPUT_OVERFLOWED, "Input overflowed"),   # exception_on_overflow=True style
        64: OSError(-9996, "Invalid device")})                                # unplugged after 3.1 s of audio
    pa = fake_pyaudio(monkeypatch, stream=stream)
    message = live(trained_model_dir, "--window-seconds", "2.5")
    out, err = capsys.readouterr()
    assert pa.opened["rate"] == 44100 and pa.opened["frames_per_buffer"] == 44100 // reads_per_second
    assert message.startswith("error: input device Fake USB mic (device 0, 44100 Hz) stopped mid-stream: "
                              "Invalid device [-9996]; stopped after 3.1 s of audio: 2 hops")
    assert message.endswith("1 input overflows")
    assert err.count("input overflow") == 1
    # Resampled to 16 kHz, windows still fall on the 0.5 s grid of stream time.
    assert [h[:2] for h in hops(out)] == [(0.0, 2.5), (0.5, 3.0)]
    assert stream.closed and pa.terminated


def test_ctrl_c_stops_cleanly(trained_model_dir, monkeypatch, capsys):
    stream = FakeStream(tone("moo", 5.0, 44100), events={63: KeyboardInterrupt()})
    pa = fake_pyaudio(monkeypatch, stream=stream)
    assert live(trained_model_dir) is None
    assert "stopped (Ctrl-C) after 3.1 s of audio: 2 hops" in capsys.readouterr().err
    assert stream.closed and pa.terminated


def test_list_devices(monkeypatch, capsys):
    fake_pyaudio(monkeypatch, devices=[{"name": "Fake USB mic", "rate": 48000}])
    live_predict.main(["--list-devices"])
    assert capsys.readouterr().out == "  0  Fake USB mic  (1 ch, 48000 Hz)\n"
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    live_predict.main(["--list-devices"])
    assert "PyAudio is not installed" in capsys.readouterr().out


def test_unknown_device_is_an_error_not_a_fallback(trained_model_dir, monkeypatch):
    fake_pyaudio(monkeypatch)
    assert live(trained_model_dir, "--device", "bluetooth") == \
        "error: no input device matches 'bluetooth' (see --list-devices)"


# ---------------------------------------------------------------- the fallback

@pytest.mark.parametrize("case, reason", [
    ("no pyaudio", "PyAudio is not installed"),
    ("no device", "no audio input device found"),
    ("open refused", "cannot open input device: Device unavailable [-9985]")])
def test_fallback_streams_a_test_clip(trained_model_dir, data_dir, monkeypatch, capsys, case, reason):
    if case == "no pyaudio":
        monkeypatch.setitem(sys.modules, "pyaudio", None)   # makes `import pyaudio` raise ImportError
    else:
        fake_pyaudio(monkeypatch, devices=[] if case == "no device" else [{"name": "mic", "rate": 48000}],
                     open_error=OSError(-9985, "Device unavailable"))
    assert live(trained_model_dir, "--data-dir", data_dir, "--seconds", "5") is None
    out, err = capsys.readouterr()
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    clip = re.search(r"streaming (\S+) instead", warning).group(1)
    assert warning.startswith(f"warning: no microphone ({reason}); streaming {data_dir / 'Test'}")
    assert len(hops(out)) == 1 and hops(out)[0][2] != "silence"   # clips are shorter than one window
    assert f"classifying {clip}" in err


def test_fallback_file_and_missing_fallback(trained_model_dir, sequence_wav, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    assert live(trained_model_dir, "--fallback-file", sequence_wav, "--seconds", "3") is None
    assert len(hops(capsys.readouterr().out)) == 2
    assert live(trained_model_dir, "--data-dir", tmp_path) == \
        f"error: {tmp_path / 'Test'}: no clips to fall back on (pass --fallback-file)"


def test_fallback_uses_the_models_dataset_from_any_folder(trained_model_dir, data_dir, tmp_path, monkeypatch, capsys):
    """Run from a folder without Animals_Sounds/ and without --data-dir: the model's recorded data is used."""
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    monkeypatch.chdir(tmp_path)
    model_dir = trained_model_dir.resolve()
    assert live(model_dir, "--seconds", "5") is None
    warning = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:"))
    assert f"streaming {data_dir.resolve() / 'Test'}" in warning


def test_fallback_error_names_every_folder_tried(trained_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyaudio", None)
    model_dir = tmp_path / "moved_model"
    shutil.copytree(trained_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["data_dir"] = str(tmp_path / "gone")
    (model_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert live(model_dir) == (f"error: {tmp_path / 'gone' / 'Test'} or {Path('Animals_Sounds') / 'Test'}: "
                               "no clips to fall back on (pass --fallback-file)")
