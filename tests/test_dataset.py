"""Importing the published archive, duplicate-aware splits, class weights, and skipping bad clips in training."""
import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import BAD_INPUTS, tone, write_bad_inputs, write_stray_files, write_truncated_wav, write_wav, zip_folder

from core.dataset import (
    Clips,
    DatasetError,
    canonical_class,
    class_weights,
    group_split,
    import_dataset,
    import_noise,
    load_splits,
)
from core.features import FeatureConfig

CFG = FeatureConfig()


@pytest.mark.parametrize("folder, cls", [("Kedi-Part2", "cat"), ("kopek-part1", "dog"), ("KUS", "bird"),
                                         ("Inek", "cow"), ("Kurbaga_Part1", "frog"), ("Wolf", "wolf")])
def test_canonical_class(folder, cls):
    assert canonical_class(folder) == cls


def grouped_labels():
    """60 items in 3 classes, in groups of 1-3 copies; class 'c' holds a single group."""
    labels, groups = [], []
    for cls, n_groups in (("a", 12), ("b", 8)):
        for g in range(n_groups):
            copies = 1 + g % 3
            labels += [cls] * copies
            groups += [f"{cls}{g}"] * copies
    return np.array(labels + ["c"] * 3), np.array(groups + ["c0"] * 3)


def test_group_split_keeps_groups_whole_and_stratifies():
    labels, groups = grouped_labels()
    held = group_split(labels, groups, 0.25, seed=7)
    for g in set(groups):
        assert len(set(held[groups == g])) == 1, f"group {g} split across both sides"
    for cls in ("a", "b"):
        share = held[labels == cls].mean()
        assert 0.15 <= share <= 0.35, f"class {cls}: {share:.2f} held out for 0.25"
    assert not held[labels == "c"].any()          # a single group cannot be split: it stays for training


def test_group_split_is_deterministic_per_seed():
    labels, groups = grouped_labels()
    np.testing.assert_array_equal(group_split(labels, groups, 0.25, 3), group_split(labels, groups, 0.25, 3))
    masks = {group_split(labels, groups, 0.25, seed).tobytes() for seed in range(5)}
    assert len(masks) > 1


def read_manifest(data_dir):
    with open(data_dir / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_import_from_folder(source_dataset, tmp_path):
    data_dir = tmp_path / "Animals_Sounds"
    summary = import_dataset(source_dataset, data_dir, test_size=0.25, seed=0)
    columns, rows = read_manifest(data_dir)
    assert columns == ["file", "class", "split", "hash", "source"]
    assert summary["clips"] == len(rows) == 25 and summary["skipped"] == 0
    assert summary["duplicate_groups"] == 1 and summary["duplicate_files"] == 2
    assert set(summary["classes"]) == {"bird", "cow", "dog"}                 # Part1 + Part2 merged
    assert all(n["Test"] >= 1 and n["Training"] > n["Test"] for n in summary["classes"].values())
    for r in rows:
        assert (data_dir / r["file"]).is_file() and r["file"].startswith(f"{r['split']}/{r['class']}/")
    copies = [r["split"] for r in rows if r["source"] in ("Inek/cow_1.wav", "Inek/cow_copy.wav")]
    assert len(copies) == 2 and len(set(copies)) == 1          # a duplicate never straddles the split
    assert not list(data_dir.rglob(".DS_Store")) and not list(data_dir.glob(".import-*"))


def test_import_from_zip_matches_folder(source_dataset, tmp_path):
    archive = zip_folder(source_dataset, tmp_path / "master.zip")
    import_dataset(source_dataset, tmp_path / "from_folder", test_size=0.25, seed=0)
    import_dataset(archive, tmp_path / "from_zip", test_size=0.25, seed=0)
    key = lambda rows: sorted((r["file"], r["class"], r["split"], r["hash"]) for r in rows)  # noqa: E731
    assert key(read_manifest(tmp_path / "from_zip")[1]) == key(read_manifest(tmp_path / "from_folder")[1])


def test_import_refuses_to_overwrite_without_force(source_dataset, tmp_path):
    data_dir = tmp_path / "Animals_Sounds"
    import_dataset(source_dataset, data_dir, seed=0)
    marker = data_dir / "Training" / "bird" / "mine.wav"
    marker.write_bytes(b"user data")
    with pytest.raises(DatasetError, match="--force"):
        import_dataset(source_dataset, data_dir, seed=0)
    assert marker.exists()
    import_dataset(source_dataset, data_dir, seed=1, force=True)
    assert not marker.exists() and (data_dir / "manifest.csv").exists()


def test_import_skips_and_counts_unreadable_clips(tmp_path, capsys):
    source = tmp_path / "src"
    for i in range(3):
        write_wav(source / "Kedi-Part1" / f"cat_{i}.wav", tone("chirp", 0.5, seed=i))
    write_wav(source / "Esek" / "donkey_0.wav", tone("moo", 0.5))
    bad = write_bad_inputs(source / "Esek")
    summary = import_dataset(source, tmp_path / "out", test_size=0.3, seed=0)
    err = capsys.readouterr().err
    audio_bad = [n for n in BAD_INPUTS if n.endswith(".wav")]
    assert summary["skipped"] == len(audio_bad) and summary["clips"] == 4
    assert all(str(bad[n]) in err for n in audio_bad)
    assert "class 'donkey' has only 1 clip" in err
    assert summary["classes"]["donkey"] == {"Training": 1, "Test": 0}


def test_import_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        import_dataset(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "notes.zip").write_text("not a zip")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        import_dataset(tmp_path / "notes.zip", tmp_path / "out")
    write_bad_inputs(tmp_path / "bad" / "Kedi")
    with pytest.raises(DatasetError, match="no readable audio"):
        import_dataset(tmp_path / "bad", tmp_path / "out")


def test_import_noise_copies_audio_only(tmp_path):
    source = tmp_path / "wind"
    write_wav(source / "gust.wav", (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32))
    write_stray_files(source)
    (source / "readme.txt").write_text("recorded on a hill")
    assert import_noise(source, tmp_path / "data") == 1
    assert [p.name for p in (tmp_path / "data" / "Noise" / "wind").iterdir()] == ["gust.wav"]
    with pytest.raises(DatasetError, match="not a folder"):
        import_noise(tmp_path / "absent", tmp_path / "data")


def test_class_weights_balance_the_loss():
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    w = class_weights(y, 4)
    assert w[0] == pytest.approx(7 / 16) and w[2] == pytest.approx(7 / 4) and w[3] == 0.0   # absent class
    contributions = [w[c] * np.sum(y == c) for c in range(3)]
    assert np.allclose(contributions, contributions[0])


def training_clips(y, shifted: int = 0) -> Clips:
    """Clips of labels ``y`` without features, the last ``shifted`` of them shifted negatives."""
    from core.negatives import SHIFTED_PREFIX
    hashes = [f"{SHIFTED_PREFIX}2/{i}" if i >= len(y) - shifted else str(i) for i in range(len(y))]
    return Clips(np.zeros((len(y), 1, 1), np.float32), np.asarray(y), [Path(h) for h in hashes], hashes)


@pytest.mark.parametrize("balance, rare_share", [(0.0, 0.1), (0.5, 0.25), (1.0, 0.5)])
def test_balanced_batches_draw_rare_classes_more_often(balance, rare_share):
    pytest.importorskip("keras")
    from core.training import make_batches
    y = np.array([0] * 90 + [1] * 10)
    batches = make_batches(lambda idx, rng: idx[:, None].astype(np.float32), training_clips(y), 2, 10, seed=0,
                           balance=balance)
    drawn = []
    for _ in range(40):                                    # 40 epochs of 10 batches
        drawn += [int(i) for b in range(len(batches)) for i in batches[b][0][:, 0]]
        batches.on_epoch_end()
    assert len(batches) == 10 and all(len(batches[b][0]) == 10 for b in range(10))
    share = np.mean(y[drawn] == 1)
    # the expected share of the rare class: 10 n^-b / (10 n^-b + 90 * 90^-b)
    assert share == pytest.approx(10 * 10 ** -balance / (10 * 10 ** -balance + 90 * 90 ** -balance), abs=0.03)
    assert share == pytest.approx(rare_share, abs=0.03)
    if balance == 0:                                       # a plain shuffle: every clip once per epoch
        assert sorted(drawn[:100]) == list(range(100))


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_full_batches_have_one_shape_and_the_same_draws_in_any_order(balance):
    """Every batch holds batch_size examples; a batch depends on (seed, epoch, index) alone, as threads need."""
    pytest.importorskip("keras")
    from core.training import make_batches
    y = np.array([0] * 20 + [1] * 5)                       # 25 examples: the last of 3 batches would hold 5

    def make():
        return make_batches(lambda idx, rng: np.c_[idx, rng.random(len(idx))].astype(np.float32), training_clips(y),
                            2, 10, seed=3,
                            balance=balance, full_batches=True, workers=2)
    batches, again = make(), make()
    assert len(batches) == 3 and all(len(batches[b][0]) == 10 for b in range(3))
    backwards = [again[b][0] for b in (2, 1, 0)][::-1]     # drawn in another order, as threads may
    assert all(np.array_equal(batches[b][0], backwards[b]) for b in range(3))
    if balance == 0:                                       # every example once, then the epoch's first 5 again
        drawn = np.concatenate([batches[b][0][:, 0] for b in range(3)]).astype(int)
        assert sorted(drawn[:25]) == list(range(25)) and list(drawn[25:]) == list(drawn[:5])
    first = batches[0][0]
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][0], first)        # a new epoch, new draws


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_an_epoch_draws_as_many_as_the_clips_not_shifted_from_all_of_them(balance):
    """40 of 60 clips shifted: an epoch of 20 draws, fewer batches, drawn from every example over the epochs."""
    pytest.importorskip("keras")
    from core.training import make_batches
    y = np.array([0] * 30 + [1] * 30)
    batches = make_batches(lambda idx, rng: idx[:, None].astype(np.float32), training_clips(y, shifted=40), 2, 10,
                           seed=0, balance=balance)
    drawn = []
    for _ in range(10):
        assert len(batches) == 2
        epoch = [int(i) for b in range(2) for i in batches[b][0][:, 0]]
        assert len(epoch) == 20 and (balance or len(set(epoch)) == 20)   # a shuffle's first 20: no repeats
        drawn += epoch
        batches.on_epoch_end()
    assert len(set(drawn)) > 55                            # the epochs reach nearly all 60, not the same 20


def test_an_epoch_draw_takes_every_animal_once_and_the_negatives_share_from_all_of_them():
    from core.negatives import epoch_draw
    y = np.array([0] * 6 + [1] * 4 + [2] * 10)              # label 2: 4 negatives, then 6 shifted copies
    clips = training_clips(y, shifted=6)
    draws = [epoch_draw(clips, np.random.default_rng(seed), extra=3) for seed in range(20)]
    for drawn in draws:
        assert len(drawn) == 14 + 3 and len(set(drawn)) == len(drawn)
        assert set(range(10)) | {20, 21, 22} <= set(drawn)   # every animal and every extra example, once
        assert sum(10 <= i < 20 for i in drawn) == 4         # four negatives, as without the copies
    assert set(np.concatenate(draws)) == set(range(23))       # over the epochs the copies take turns
    plain = training_clips(y)
    np.testing.assert_array_equal(epoch_draw(plain, np.random.default_rng(1), extra=3),
                                  np.random.default_rng(1).permutation(23))


def test_batches_worked_out_ahead_are_the_batches_asked_for():
    """With threads, the next epoch is prepared once this one's batches are all asked for: the same batches."""
    pytest.importorskip("keras")
    from core.training import make_batches
    y = np.array([0] * 20 + [1] * 5)

    def make(workers):
        return make_batches(lambda idx, rng: np.c_[idx, rng.random(len(idx))].astype(np.float32), training_clips(y),
                            2, 10, seed=3,
                            balance=0.5, full_batches=True, workers=workers)
    ahead, plain = make(2), make(1)
    for epoch in range(3):
        for b in (2, 0, 1):                                # in another order than the indices, as Keras shuffles
            assert np.array_equal(ahead[b][0], plain[b][0])
        ahead_of_now = set(ahead.prefetched) - {(epoch, b) for b in range(3)}
        assert ahead_of_now == {(epoch + 1, b) for b in range(3)}   # the next epoch's, all, and nothing older
        ahead.on_epoch_end()
        plain.on_epoch_end()
    ahead.close()
    assert not ahead.prefetched and ahead.ahead._shutdown


def test_a_subset_of_every_clip_shares_the_arrays_and_any_other_copies_them():
    from core.dataset import Clips
    clips = Clips(np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 1, 0, 1]), list("abcd"), list("ABCD"))
    every = clips.subset(np.arange(4))
    assert every is not clips and every.x is clips.x and every.files == clips.files
    reordered = clips.subset([3, 2, 1, 0])
    assert reordered.x is not clips.x and reordered.files == list("dcba") and list(reordered.y) == [1, 0, 1, 0]
    assert clips.subset([]).x.shape == (0, 3)


def test_load_splits_carves_validation_from_training(data_dir, cache_dir):
    data = load_splits(data_dir, CFG, seed=42, val_size=0.2, cache_dir=cache_dir)
    assert data.classes == ["bird", "cow", "dog"] and data.skipped == 0
    n_training = sum(1 for p in (data_dir / "Training").rglob("*") if p.suffix.lower() == ".wav")
    assert len(data.train.y) + len(data.val.y) == n_training and len(data.val.y) >= 3
    assert all("Training" in f.parts for f in data.train.files + data.val.files)
    assert all("Test" in f.parts for f in data.test.files)
    assert not set(data.train.hashes) & set(data.val.hashes)
    assert set(data.val.y) == {0, 1, 2}                        # stratified: every class validated
    again = load_splits(data_dir, CFG, seed=42, val_size=0.2, cache_dir=cache_dir)
    assert again.val.files == data.val.files and again.manifest_hash == data.manifest_hash
    # the run that filled the cache saw the very features later runs read from it
    assert all(np.array_equal(a.x, b.x) for a, b in ((data.train, again.train), (data.val, again.val),
                                                      (data.test, again.test)))


def build_messy_data_dir(root):
    """Good clips of bird and cow among every kind of bad input, stray files and degenerate classes."""
    for split, n in (("Training", 4), ("Test", 1)):
        for cls, kind in (("bird", "chirp"), ("cow", "moo")):
            for i in range(n):
                write_wav(root / split / cls / f"{cls}_{i}.wav", tone(kind, 0.5, seed=i + 10 * (split == "Test")))
    bad = write_bad_inputs(root / "Training" / "bird")
    write_stray_files(root / "Training" / "cow")
    truncated = write_truncated_wav(root / "Training" / "cow" / "cut.wav", tone("moo", 1.0, seed=5))
    write_wav(root / "Training" / "cat" / "only.wav", tone("bark", 0.5))        # a class with a single clip
    write_wav(root / "Test" / "cat" / "cat_test.wav", tone("bark", 0.5, seed=3))
    (root / "Training" / "frog").mkdir()                                        # an empty class folder
    (root / "Training" / "owl").mkdir()                                         # two files, both unreadable
    (root / "Training" / "owl" / "a.wav").write_bytes(b"")
    (root / "Training" / "owl" / "b.wav").write_bytes(b"RIFF....not really")
    return bad, truncated


def test_training_skips_and_counts_bad_inputs(tmp_path, cache_dir, capsys):
    bad, truncated = build_messy_data_dir(tmp_path / "data")
    data = load_splits(tmp_path / "data", CFG, seed=0, cache_dir=cache_dir)
    err = capsys.readouterr().err
    audio_bad = [n for n in BAD_INPUTS if n.endswith(".wav")]
    assert data.classes == ["bird", "cow"]
    assert data.skipped == len(audio_bad) + 2                       # + the two unreadable owls
    assert len(data.train.y) + len(data.val.y) == 4 + 5             # bird 4, cow 4 + the truncated clip
    lines = err.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines), err     # one line each, no tracebacks
    for name in BAD_INPUTS:
        assert any(str(bad[name]) in line and BAD_INPUTS[name] in line for line in lines), name
    assert any(str(truncated) in line and "truncated" in line for line in lines)
    assert any("frog" in line and "empty class folder" in line for line in lines)
    assert any("'cat' has only 1" in line for line in lines) and any("'owl' has only 0" in line for line in lines)
    assert any("['cat']" in line and "not in training" in line for line in lines)
    assert ".DS_Store" not in err and "desktop.ini" not in err


def test_load_splits_refuses_unusable_data_dirs(tmp_path, cache_dir):
    with pytest.raises(DatasetError, match="no training data"):
        load_splits(tmp_path, CFG, seed=0, cache_dir=cache_dir)
    write_wav(tmp_path / "Training" / "cow" / "a.wav", tone("moo", 0.5))
    write_wav(tmp_path / "Training" / "cow" / "b.wav", tone("moo", 0.5, seed=1))
    with pytest.raises(DatasetError, match="at least 2 classes"):
        load_splits(tmp_path, CFG, seed=0, cache_dir=cache_dir)
    for i in range(2):
        write_wav(tmp_path / "Training" / "dog" / f"{i}.wav", tone("bark", 0.5, seed=i))
    with pytest.raises(DatasetError, match="no test clips"):
        load_splits(tmp_path, CFG, seed=0, cache_dir=cache_dir)



def test_the_default_cache_lies_outside_the_package_that_ray_ships():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import core
    env = {k: v for k, v in os.environ.items() if k != "ANIMAL_SOUNDS_CACHE"}
    printed = subprocess.run([sys.executable, "-c", "from core.dataset import DEFAULT_CACHE; print(DEFAULT_CACHE)"],
                             env=env, cwd=Path(core.__file__).parent.parent, capture_output=True, text=True, check=True)
    default = Path(printed.stdout.strip())
    assert default.name == ".cache" and Path(core.__file__).resolve().parent not in default.resolve().parents
