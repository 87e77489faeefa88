"""Classify what a microphone hears, continuously (or a recording streamed as if it were heard).

    python live_predict.py                          # default microphone; a Test clip if there is none
    python live_predict.py --list-devices
    python live_predict.py --device 2 --window-seconds 3 --hop-seconds 0.5 --smooth 4 --seconds 60
    python live_predict.py --file clip.wav [--no-realtime]
    python live_predict.py --model-dir model/transfer --model-dir model/enhance    # an ensemble of two

Audio is captured at the device's native rate, resampled to the model's rate,
kept in a ring buffer, and every hop the latest window is classified with the
features the model was trained with. One line per hop: the window, the label
(smoothed over the last --smooth hops; "silence" below --gate-db; "unknown"
when the model's open-set score rejects the window, unless --no-reject), its
confidence, and a meter of the input level over the last hop.

Without PyAudio, without an input device, or when the device refuses to open,
a random Test clip of the model's dataset (or --fallback-file) is streamed through the
same pipeline in real time instead, so the command always shows predictions.
"""
import os

# Per-hop work is a few ms; BLAS threads would only fight the audio thread and other processes for cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import common  # noqa: E402

METER_FLOOR_DB = -60.0   # the level meter spans METER_FLOOR_DB..0 dBFS
LEVEL_FRAME_SECONDS = 0.05
# A read every 50 ms: a hop is decided at most one read (plus the resampler's ~20 ms delay) after its audio.
CHUNK_SECONDS = 0.05
DEFAULT_DATA_DIR = Path("Animals_Sounds")


def gate_db(text: str) -> float:
    """``--gate-db`` values: a level in dBFS, or 'off' to classify everything."""
    return float("-inf") if text.lower() == "off" else float(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", help="input device index or name fragment (default: the system's default input)")
    src.add_argument("--file", type=Path, help="stream this recording instead of a microphone")
    src.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--model-dir", type=Path, action="append",
                   help="trained model directory (default: best trained variant); give it again to average "
                        "several models' calibrated probabilities (an ensemble)")
    p.add_argument("--backend", choices=common.BACKENDS, default="auto",
                   help="model runtime, as for predict.py (default: onnx, else tflite, else keras)")
    p.add_argument("--window-seconds", type=float, default=2.5, help="analysis window (default: %(default)s)")
    p.add_argument("--hop-seconds", type=float, default=0.5,
                   help="a window is classified every hop (default: %(default)s)")
    p.add_argument("--smooth", type=int, default=3,
                   help="average class probabilities over the last N hops (1: none; default: %(default)s)")
    p.add_argument("--gate-db", type=gate_db, default=-50.0,
                   help="windows whose loudest 50 ms stays below this level (dBFS) are reported as "
                        "silence, not classified; 'off' disables the gate (default: %(default)s)")
    p.add_argument("--no-reject", action="store_true",
                   help="always name the most probable class, never 'unknown'")
    p.add_argument("--reject-threshold", type=float,
                   help="OOD score above which a window is 'unknown' (default: the model's, set on validation)")
    p.add_argument("--seconds", type=float, help="stop after this much audio (default: run until Ctrl-C)")
    p.add_argument("--no-realtime", action="store_true",
                   help="stream a file as fast as possible instead of at its real pace (tests, benchmarks)")
    p.add_argument("--fallback-file", type=Path, help="the recording streamed when no microphone can be used "
                                                      "(default: a random Test clip of --data-dir)")
    p.add_argument("--data-dir", type=Path,
                   help="dataset root whose Test/ clips serve as the fallback (default: the one the model "
                        f"was trained on, as its config.json records, else ./{DEFAULT_DATA_DIR})")
    args = p.parse_args(argv)
    if args.window_seconds <= 0 or args.hop_seconds <= 0 or args.smooth < 1:
        p.error("--window-seconds and --hop-seconds must be positive and --smooth at least 1")
    return args


# ---------------------------------------------------------------- the pipeline

@dataclasses.dataclass
class Hop:
    """One classified window: times in seconds of stream, the (smoothed) decision, input levels in dBFS."""
    start: float
    end: float
    label: str
    confidence: float | None   # None for silence
    level_db: float            # loudest 50 ms of the newest hop: what the meter shows


def frame_levels_db(y: np.ndarray, frame: int) -> np.ndarray:
    """RMS level in dBFS of consecutive ``frame``-sample frames, aligned to the end of ``y``."""
    n = len(y) // frame
    frames = y[len(y) - n * frame:].reshape(n, frame) if n else y[None, :]
    return 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)


class LivePipeline:
    """Native-rate chunks in, :class:`Hop` decisions out: resample, window, gate, classify, smooth."""

    def __init__(self, clf, source_rate: int, window_seconds: float, hop_seconds: float,
                 smooth: int = 3, gate_db: float = -50.0):
        import soxr
        self.clf, self.cfg, self.gate_db = clf, clf.cfg, gate_db
        sr = self.cfg.sr
        # The same streaming resampler and quality as audio.stream_audio, so files match predict.py.
        self.resampler = (None if source_rate == sr else
                          soxr.ResampleStream(source_rate, sr, 1, dtype="float32", quality="HQ"))
        self.hop = int(round(hop_seconds * sr))
        self.windows = common.SlidingWindows(int(round(window_seconds * sr)), self.hop)
        self.recent = collections.deque(maxlen=smooth)   # (probabilities, OOD score) of the last hops since a silence

    def feed(self, chunk: np.ndarray) -> list[Hop]:
        """The hops that a chunk of native-rate audio completes (often none)."""
        if self.resampler is not None:
            chunk = self.resampler.resample_chunk(chunk, last=False)
        return [self.classify(*w) for w in self.windows.push(chunk)]

    def finish(self) -> list[Hop]:
        """The hops left at the end of the stream: the resampler's tail and the last partial window."""
        hops = []
        if self.resampler is not None:
            hops = [self.classify(*w) for w in
                    self.windows.push(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True))]
        return hops + [self.classify(*w) for w in self.windows.finish()]

    def classify(self, start: int, end: int, audio: np.ndarray) -> Hop:
        """Decide one window: silence below the gate, else the smoothed class, or unknown.

        Probabilities and OOD scores are both averaged over the last hops, so a
        single odd window neither flips the label nor turns it into "unknown".
        """
        sr, frame = self.cfg.sr, int(LEVEL_FRAME_SECONDS * self.cfg.sr)
        levels = frame_levels_db(audio, frame)
        # The gate looks at the whole window (a call 2 s ago is still in it); the meter at what is heard now.
        span = dict(start=start / sr, end=end / sr, level_db=float(levels[-max(1, self.hop // frame):].max()))
        if levels.max() < self.gate_db:
            self.recent.clear()   # a pause ends the smoothing: the next sound is not averaged with the last
            return Hop(label="silence", confidence=None, **span)
        probs, scores = self.clf.analyse_audio([audio])
        self.recent.append((probs[0], None if scores is None else scores[0]))
        mean = np.mean([p for p, _ in self.recent], axis=0)
        score = None if scores is None else float(np.mean([s for _, s in self.recent]))
        label, confidence = self.clf.decide(mean, score)
        if self.clf.multi_label:   # every class above its threshold, e.g. "bird+dog"
            label = "+".join(self.clf.labels(mean, score)) or label
        return Hop(label=label, confidence=confidence, **span)


# ---------------------------------------------------------------- running it

def warm_up(clf, window_seconds: float) -> None:
    """Classify one silent window, so first-call costs (JIT, tracing: seconds) are paid before streaming."""
    clf.analyse_audio([np.zeros(int(window_seconds * clf.cfg.sr), np.float32)])


def meter(level_db: float, width: int = 20) -> str:
    """A text level meter, e.g. ``[#########...........] -33 dBFS``."""
    filled = int(np.clip((level_db - METER_FLOOR_DB) / -METER_FLOOR_DB, 0, 1) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {max(level_db, -99):3.0f} dBFS"


def print_hop(hop: Hop) -> None:
    """One line per hop, laid out like ``predict.py --timeline``'s windows plus the meter."""
    confidence = "    " if hop.confidence is None else f"{hop.confidence:.2f}"
    print(f"  {hop.start:8.2f}-{hop.end:8.2f} s  {hop.label:<12}{confidence}  {meter(hop.level_db)}", flush=True)


@dataclasses.dataclass
class Progress:
    """What a run has done so far (kept when it is interrupted)."""
    samples: int = 0       # native-rate samples consumed
    hops: int = 0
    busy: float = 0.0      # seconds spent in the pipeline


def run(source: common.AudioSource, pipeline: LivePipeline, seconds: float | None, progress: Progress) -> None:
    """Stream ``source`` through ``pipeline``, printing each hop, until it ends or ``seconds`` of audio."""
    def process(step, *chunk):
        t0 = time.perf_counter()
        hops = step(*chunk)
        progress.busy += time.perf_counter() - t0
        progress.hops += len(hops)
        for hop in hops:
            print_hop(hop)

    limit = None if seconds is None else int(round(seconds * source.rate))
    for chunk in source.chunks():
        if limit is not None:
            chunk = chunk[:limit - progress.samples]
        progress.samples += len(chunk)
        process(pipeline.feed, chunk)
        if limit is not None and progress.samples >= limit:
            break
    process(pipeline.finish)


def fallback_dirs(args, config: dict) -> list[Path]:
    """Where fallback clips are looked for: ``--data-dir`` if given, else the model's data, else ./Animals_Sounds."""
    if args.data_dir:
        return [args.data_dir]
    recorded = [Path(config["data_dir"])] if config.get("data_dir") else []
    return list(dict.fromkeys(recorded + [DEFAULT_DATA_DIR]))


def fallback_clip(args, config: dict) -> Path:
    """``--fallback-file``, else a random Test clip of the first of :func:`fallback_dirs` that has any."""
    if args.fallback_file:
        return args.fallback_file
    tests = [d / "Test" for d in fallback_dirs(args, config)]
    for test in tests:
        clips = sorted(p for p in test.rglob("*") if p.is_file() and common.is_audio_file(p))
        if clips:
            return random.choice(clips)
    raise common.AudioError(" or ".join(map(str, tests)), "no clips to fall back on (pass --fallback-file)")


def open_source(args, config: dict) -> common.AudioSource:
    """The requested source: ``--file``, else the microphone, else (one warning line) the fallback clip."""
    realtime = not args.no_realtime
    if args.file:
        return common.FileSource(args.file, realtime=realtime, chunk_seconds=CHUNK_SECONDS)
    try:
        return common.MicrophoneSource(args.device, CHUNK_SECONDS)
    except common.SourceUnavailable as e:
        clip = fallback_clip(args, config)
        common.warn(f"no microphone ({e}); streaming {clip} {'in real time ' if realtime else ''}instead")
        return common.FileSource(clip, realtime=realtime, chunk_seconds=CHUNK_SECONDS)


def print_devices() -> None:
    """``--list-devices``: one line per input device, or why there are none."""
    try:
        devices, reason = common.list_input_devices(), "none found"
    except common.SourceUnavailable as e:
        devices, reason = [], str(e)
    for d in devices:
        print(f"{d['index']:3d}  {d['name']}  ({d['maxInputChannels']} ch, {d['defaultSampleRate']:.0f} Hz)")
    if not devices:
        print(f"no input devices ({reason}): live_predict.py will stream a recording instead")


def summary(progress: Progress, source: common.AudioSource, hop_seconds: float, how: str) -> str:
    """The closing line: audio streamed, hops, processing per hop and the real-time factor."""
    per_hop = progress.busy / max(1, progress.hops)
    line = (f"{how} after {progress.samples / source.rate:.1f} s of audio: {progress.hops} hops, "
            f"{1000 * per_hop:.1f} ms processing per hop (real-time factor {per_hop / hop_seconds:.3f})")
    return line + (f", {source.overflows} input overflows" if source.overflows else "")


def main(argv=None):
    args = parse_args(argv)
    if args.list_devices:
        print_devices()
        return
    # The model loads and warms up before the stream opens: the device's buffer would overflow meanwhile.
    try:
        clf = common.load_classifier(args.model_dir or [common.default_model_dir()], args.backend,
                                     reject=not args.no_reject, threshold=args.reject_threshold)
    except common.ModelDirError as e:
        sys.exit(f"error: {e}")
    warm_up(clf, args.window_seconds)
    try:
        source = open_source(args, clf.config)
    except ValueError as e:   # a --device that matches nothing; no clip to fall back on (AudioError)
        sys.exit(f"error: {e}")
    progress = Progress()
    with source:
        pipeline = LivePipeline(clf, source.rate, args.window_seconds, args.hop_seconds, args.smooth, args.gate_db)
        print(f"classifying {source.name} with {clf.name}: {args.window_seconds:g} s windows "
              f"every {args.hop_seconds:g} s (Ctrl-C stops)", file=sys.stderr)
        try:
            run(source, pipeline, args.seconds, progress)
        except KeyboardInterrupt:
            print(summary(progress, source, args.hop_seconds, "stopped (Ctrl-C)"), file=sys.stderr)
            return
        except common.AudioError as e:
            sys.exit(f"error: {e}")
        except common.SourceLost as e:
            sys.exit(f"error: {e}; {summary(progress, source, args.hop_seconds, 'stopped')}")
    print(summary(progress, source, args.hop_seconds, "done"), file=sys.stderr)


if __name__ == "__main__":
    main()
