"""Shared fixtures: tiny generated recordings and datasets (no audio is committed)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def seeded_keras():
    """Each test starts from the same Keras, NumPy and Python seeds, so no weight initialisation makes it flaky."""
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(0)


def tone(kind: str, seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A synthetic 'animal': 'chirp' (rising 2-4 kHz), 'moo' (200 Hz + harmonics), 'bark' (noise bursts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if kind == "chirp":
        y = np.sin(2 * np.pi * (2000 + 1000 * t / seconds) * t * (1 + 0.05 * rng.random()))
    elif kind == "moo":
        f0 = 180 + 40 * rng.random()
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    elif kind == "bark":
        y = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 4 * t) > 0.3)
    else:
        raise ValueError(kind)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def write_wav(path: Path, y: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype=subtype, format="WAV")
    return path


KINDS = {"bird": "chirp", "cow": "moo", "dog": "bark"}


def make_source_dataset(root: Path, per_class: int = 8) -> Path:
    """A dataset in the published layout: Turkish folders, Part1/Part2 halves, quirks included."""
    turkish = {"bird": ["Kus-Part1", "Kus-Part2"], "cow": ["Inek"], "dog": ["Kopek-Part1", "Kopek-Part2"]}
    for cls, kind in KINDS.items():
        folders = turkish[cls]
        for i in range(per_class):
            sr = (16000, 22050, 8000)[i % 3]
            name = f"{cls}_{i}.WAV" if i % 4 == 0 else f"{cls}_{i}.wav"
            subtype = "PCM_U8" if i % 5 == 1 else "PCM_16"
            y = tone(kind, 0.6 + 0.1 * (i % 4), sr, seed=i)
            if i % 3 == 2:
                y = np.stack([y, 0.8 * y], axis=1)
            write_wav(root / folders[i % len(folders)] / name, y, sr, subtype)
    # a byte-identical duplicate inside one class
    dup = root / "Inek" / "cow_1.wav"
    (root / "Inek" / "cow_copy.wav").write_bytes(dup.read_bytes())
    (root / "Inek" / ".DS_Store").write_bytes(b"\x00\x01junk")
    return root


@pytest.fixture(scope="session")
def source_dataset(tmp_path_factory) -> Path:
    return make_source_dataset(tmp_path_factory.mktemp("src") / "Animal-Sound-Dataset-master")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, source_dataset) -> Path:
    """An imported Animals_Sounds/ tree (Training/Test split) with two noise files."""
    from core.dataset import import_dataset
    d = tmp_path_factory.mktemp("data") / "Animals_Sounds"
    import_dataset(source_dataset, d, test_size=0.25, seed=0)
    rng = np.random.default_rng(1)
    write_wav(d / "Noise" / "wind" / "wind1.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32))
    write_wav(d / "Noise" / "wind" / "wind2.wav", (0.01 * rng.standard_normal(24000)).astype(np.float32))
    return d


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("ANIMAL_SOUNDS_CACHE", str(d))
    return d


def train_args(variant: str, data_dir: Path, out: Path, *extra: str) -> list:
    """Command-line arguments for a quick 1-epoch run writing into ``out``."""
    return ["--data-dir", str(data_dir), "--model-dir", str(out / "model" / variant), "--epochs", "1",
            "--batch-size", "8", "--charts-dir", str(out / "charts"), "--cache-dir", str(out / "cache"),
            "--quiet", *extra]


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, data_dir) -> Path:
    """A baseline trained for 2 epochs on the tiny dataset (shared by predict/live/export tests)."""
    import baseline
    import common
    out = tmp_path_factory.mktemp("trained")
    args = common.make_parser("baseline", "test").parse_args(
        train_args("baseline", data_dir, out, "--epochs", "2"))
    common.run_experiment("baseline", args, baseline.train)
    return out / "model" / "baseline"


# ---------------------------------------------------------------- bad inputs (appended for the core tests)

BAD_INPUTS = {  # file name -> a fragment of the one-line reason it is refused
    "empty.wav": "empty file",
    "junk.wav": "not readable as audio",
    "zero.wav": "no audio samples",
    "silent.wav": "silent",
    "click.wav": "too short",
    "notes.txt": "unsupported extension",
    "song.mid": "unsupported extension",
}


def write_bad_inputs(folder: Path) -> dict:
    """Write one file per unusable input the issue lists (see ``BAD_INPUTS``); returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "junk.wav").write_bytes(b"<html>not audio, just bytes named .wav</html>\n" * 50)
    write_wav(folder / "zero.wav", np.zeros(0, np.float32))
    write_wav(folder / "silent.wav", np.zeros(16000, np.float32))
    write_wav(folder / "click.wav", tone("chirp", 0.01))
    (folder / "notes.txt").write_text("field notes, not audio\n")
    (folder / "song.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60")
    return {name: folder / name for name in BAD_INPUTS}


def write_truncated_wav(path: Path, y: np.ndarray, keep: float = 0.4) -> Path:
    """A WAV whose header is intact but whose data stops after ``keep`` of the samples."""
    data = write_wav(path, y).read_bytes()
    path.write_bytes(data[:44 + int(keep * (len(data) - 44))])
    return path


def write_stray_files(folder: Path) -> None:
    """The never-audio files dataset folders collect on macOS and Windows."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip ``folder`` the way GitHub serves a repository: everything under one top-level directory."""
    import zipfile
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder.parent))
    return archive


def check_quick_robustness(model_args: list, out: Path) -> None:
    """Run robustness.py on one SNR, eps and sigma with ``model_args`` (--model-dir, ...) into ``out``; check its table."""
    import pandas as pd

    import robustness
    robustness.main([*model_args, "--out", str(out), "--snrs", "0", "--eps", "0.1", "--sigmas", "1",
                     "--pgd-steps", "2", "--deepfool-iterations", "2"])
    table = pd.read_csv(out / "robustness.csv")
    assert table.kind.tolist() == ["clean", "white", "wind", "feature_gaussian", "fgsm", "pgd"]
    assert table.accuracy.between(0, 1).all()
