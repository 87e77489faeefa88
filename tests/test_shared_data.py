"""Opt-in checks on the real data in ../shared/data (skipped cleanly where it is absent)."""
import csv

import pytest
from conftest import SHARED

from core.audio import load_audio, load_noise_bank
from core.dataset import CLASS_NAMES, import_dataset

DATASET = SHARED / "animal-sound-dataset"
WIND = SHARED / "noise" / "wind"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    if not DATASET.is_dir():
        pytest.skip(f"{DATASET} is absent (the real dataset is optional)")
    data_dir = tmp_path_factory.mktemp("shared") / "Animals_Sounds"
    return import_dataset(DATASET, data_dir, seed=42), data_dir


def test_every_published_clip_decodes(imported):
    summary, _ = imported
    assert summary["clips"] == 696 and summary["skipped"] == 0
    assert sorted(summary["classes"]) == sorted(CLASS_NAMES.values())


def test_duplicates_are_grouped_on_one_side(imported, capsys):
    summary, data_dir = imported
    assert summary["duplicate_groups"] > 0
    with capsys.disabled():
        print(f"\n{summary['duplicate_groups']} duplicate groups ({summary['duplicate_files']} files) "
              f"in the published dataset")
    splits_by_hash = {}
    with open(data_dir / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            splits_by_hash.setdefault(row["hash"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_by_hash.values())


def test_every_class_is_tested_in_proportion(imported):
    summary, _ = imported
    for cls, n in summary["classes"].items():
        assert 0.15 <= n["Test"] / (n["Test"] + n["Training"]) <= 0.25, f"{cls}: {n}"


def test_real_wind_recordings_load(capsys):
    if not WIND.is_dir():
        pytest.skip(f"{WIND} is absent")
    bank = load_noise_bank(WIND)
    assert len(bank) == len([p for p in WIND.iterdir() if p.suffix.lower() == ".wav"])
    assert "synthetic" not in capsys.readouterr().err


def test_the_mp3_decoders_notes_on_a_published_clip_are_one_line_naming_it(capfd):
    clip = DATASET / "Kopek-Part2" / "dog_124.wav"   # MP3 in WAV, with a chunk after the MP3 data
    if not clip.is_file():
        pytest.skip(f"{clip} is absent (the real dataset is optional)")
    assert len(load_audio(clip, 16000)) > 0
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {clip}: the MP3 decoder says: Note: Illegal Audio-MPEG")
