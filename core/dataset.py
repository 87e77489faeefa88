"""Datasets on disk: importing the published archive, duplicate-aware splits, feature loading.

Layout under a data directory (default ``Animals_Sounds/``)::

    Training/<class>/*.wav   Test/<class>/*.wav   Noise/wind/*.wav   manifest.csv
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import shutil
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .audio import AudioError, is_audio_file, is_stray, load_audio, warn
from .features import FeatureCache, FeatureConfig, clip_features, file_hash

DATASET_URL = "https://github.com/YashNita/Animal-Sound-Dataset/archive/refs/heads/master.zip"
CLASS_NAMES = {  # the published folders are Turkish; -Part1/-Part2 halves merge into one class
    "aslan": "lion", "esek": "donkey", "inek": "cow", "kedi": "cat", "kopek": "dog",
    "koyun": "sheep", "kurbaga": "frog", "kus": "bird", "maymun": "monkey", "tavuk": "chicken",
}
MIN_CLIPS_PER_CLASS = 2
MANIFEST_COLUMNS = ["file", "class", "split", "hash", "source"]
# Beside the package, not in it: Ray ships the package to its workers (core/ray_engine.py).
DEFAULT_CACHE = Path(os.environ.get("ANIMAL_SOUNDS_CACHE", Path(__file__).resolve().parent.parent / ".cache"))


class DatasetError(RuntimeError):
    """The data directory cannot feed a training run; ``str()`` says what to do."""


def canonical_class(folder: str) -> str:
    """Class name for a source folder: ``Kedi-Part2`` -> ``cat``; unknown names are kept, lower-cased."""
    base = folder.lower()
    for suffix in ("-part1", "-part2", "-part3", "_part1", "_part2", "_part3"):
        base = base.removesuffix(suffix)
    return CLASS_NAMES.get(base, base)


def pcm16(y: np.ndarray) -> bytes:
    """Audio as little-endian 16-bit samples: what content hashes are taken of."""
    return np.round(np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def audio_hash(y: np.ndarray) -> str:
    """Hash of decoded audio at 16-bit precision: equal for copies of one clip in any container."""
    return hashlib.sha1(pcm16(y)).hexdigest()


def group_split(labels, groups, test_size: float, seed: int) -> np.ndarray:
    """Stratified split that never separates a group; returns a boolean "is held out" mask.

    For each class, whole groups (copies of one clip) are drawn in random order
    until the class's held-out share reaches ``test_size``. A class with a single
    group stays entirely on the kept side.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), bool)
    for cls in sorted(set(labels)):
        members = defaultdict(list)
        for i in np.flatnonzero(labels == cls):
            members[groups[i]].append(i)
        keys = sorted(members)
        if len(keys) < 2:
            continue
        target = max(1, round(test_size * sum(len(v) for v in members.values())))
        taken = 0
        for k in rng.permutation(len(keys)):
            size = len(members[keys[k]])
            if taken >= target:
                break
            if taken and taken + size > target:    # a big group would overshoot: try a smaller one
                continue
            held_out[members[keys[k]]] = True
            taken += size
        if taken == sum(len(v) for v in members.values()):   # keep at least one group for training
            held_out[members[keys[0]]] = False
    return held_out


def recording_split(labels, groups, test_size: float, seed: int) -> np.ndarray:
    """Held-out mask that keeps each group whole across *all* classes; returns a boolean array.

    :func:`group_split` keeps a group whole within one class. Clips cut from a
    long recording may hold several classes, and all of them must land on one
    side, or the recording's site, day and background would be on both. Groups
    are drawn in random order; one is held out when, for every class it holds,
    the held-out count is still below ``test_size`` of the class (a class's
    first group may overshoot) and another group of that class stays on the
    kept side. A class found in a single group is never held out.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    totals = Counter(labels.tolist())
    target = {c: max(1, round(test_size * n)) for c, n in totals.items()}
    n_groups = {c: len(set(groups[labels == c].tolist())) for c in totals}
    held_out = np.zeros(len(labels), bool)
    taken, taken_groups = Counter(), Counter()
    keys = sorted(set(groups.tolist()))
    for k in np.random.default_rng(seed).permutation(len(keys)):
        members = groups == keys[k]
        counts = Counter(labels[members].tolist())
        if all((taken[c] == 0 or taken[c] + n <= target[c]) and taken_groups[c] + 1 < n_groups[c]
               for c, n in counts.items()):
            held_out |= members
            taken.update(counts)
            taken_groups.update(counts.keys())
    return held_out


# ---------------------------------------------------------------- import

def _source_files(root: Path):
    """(path, class) for every audio file under ``root``; the class is the parent folder's name."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and is_audio_file(p) and "__MACOSX" not in p.parts:
            yield p, canonical_class(p.parent.name)


def download_archive(url: str = DATASET_URL) -> Path:
    """Fetch the published archive with a progress bar, cached the Keras way (~/.keras/datasets)."""
    import keras
    # one cache entry per URL: get_file returns any cached file of the same name without downloading
    name = f"Animal-Sound-Dataset-{hashlib.sha1(url.encode()).hexdigest()[:10]}.zip"
    try:
        return Path(keras.utils.get_file(fname=name, origin=url))
    except Exception as e:
        raise DatasetError(f"could not download {url} ({type(e).__name__}: {str(e)[:120]}); "
                           f"import a local copy instead: python download_data.py --source PATH") from None


def import_dataset(source, data_dir, test_size: float = 0.2, seed: int = 42, force: bool = False) -> dict:
    """Import a folder or zip in the published layout into ``data_dir``/Training and /Test.

    Every clip is decoded once (unreadable ones are skipped and counted), copies
    of the same decoded audio form one group, and :func:`group_split` keeps each
    group on one side. The new tree is built beside the old one and swapped in
    only when complete. Returns a summary dict (counts, duplicate groups, skipped).
    """
    source, data_dir = Path(source), Path(data_dir)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder")
    check_target(data_dir, force)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".import-") as tmp:
        tmp = Path(tmp)
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise DatasetError(f"{source}: neither a folder nor a zip archive")
            with zipfile.ZipFile(source) as z:
                z.extractall(tmp / "src")
            root = tmp / "src"
        else:
            root = source
        rows, skipped = [], 0
        for path, cls in tqdm(list(_source_files(root)), desc="decoding", unit="clip", disable=None):
            try:
                digest = audio_hash(load_audio(path, 16000))
            except AudioError as e:
                warn(f"skipping {e}")
                skipped += 1
                continue
            rows.append({"source": str(path.relative_to(root)), "class": cls, "hash": digest, "path": path})
        if not rows:
            raise DatasetError(f"{source}: no readable audio files found")
        counts = Counter(r["class"] for r in rows)
        held_out = group_split([r["class"] for r in rows], [r["hash"] for r in rows], test_size, seed)
        new = tmp / "new"
        used = set()
        for r, is_test in zip(rows, held_out):
            r["split"] = "Test" if is_test else "Training"
            name = r["path"].name
            if (r["split"], r["class"], name.lower()) in used:   # Part1/Part2 may reuse a name
                name = f"{r['path'].parent.name}_{name}"
            used.add((r["split"], r["class"], name.lower()))
            dest = new / r["split"] / r["class"] / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(r["path"], dest)
            r["file"] = str(dest.relative_to(new))
        publish(new, data_dir, rows, ("Training", "Test"))
    groups = Counter(r["hash"] for r in rows)
    summary = {
        "classes": split_counts(rows),
        "clips": len(rows), "skipped": skipped,
        "duplicate_groups": sum(1 for n in groups.values() if n > 1),
        "duplicate_files": sum(n for n in groups.values() if n > 1),
    }
    for c, n in counts.items():
        if n < MIN_CLIPS_PER_CLASS:
            warn(f"class '{c}' has only {n} clip; it cannot be tested and training will skip it")
    return summary


def check_target(data_dir: Path, force: bool) -> None:
    """Refuse to replace a data directory's Training split unless ``force``; create the directory."""
    if (data_dir / "Training").is_dir() and any((data_dir / "Training").iterdir()) and not force:
        raise DatasetError(f"{data_dir}/Training already holds data; pass --force to replace it")
    data_dir.mkdir(parents=True, exist_ok=True)


def publish(new: Path, data_dir: Path, rows: list[dict], parts) -> None:
    """Write ``rows`` as ``new``/manifest.csv, then swap each of ``parts`` and the manifest into ``data_dir``.

    ``new`` is a finished tree built beside the data directory. Each part of
    ``data_dir`` is replaced by its namesake in ``new``, or removed when
    ``new`` has none (an import that holds nothing out leaves no old Test).
    """
    with open(new / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, MANIFEST_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    for part in parts:
        if (data_dir / part).exists():
            shutil.rmtree(data_dir / part)
        if (new / part).exists():
            (data_dir / part).parent.mkdir(parents=True, exist_ok=True)
            os.replace(new / part, data_dir / part)
    os.replace(new / "manifest.csv", data_dir / "manifest.csv")


def split_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """{class: {"Training": n, "Test": n}} over manifest rows, classes sorted."""
    counts = Counter((r["class"], r["split"]) for r in rows)
    return {c: {"Training": counts[c, "Training"], "Test": counts[c, "Test"]}
            for c in sorted({r["class"] for r in rows if r["split"] in ("Training", "Test")})}


def import_noise(noise_source, data_dir) -> int:
    """Copy the audio files of ``noise_source`` into ``data_dir``/Noise/wind; returns how many."""
    noise_source = Path(noise_source)
    if not noise_source.is_dir():
        raise DatasetError(f"{noise_source}: not a folder of noise recordings")
    dest = Path(data_dir) / "Noise" / "wind"
    dest.mkdir(parents=True, exist_ok=True)
    files = [p for p in sorted(noise_source.iterdir()) if p.is_file() and is_audio_file(p)]
    for p in files:
        shutil.copy2(p, dest / p.name)
    return len(files)


# ---------------------------------------------------------------- loading for training

def list_class_files(split_dir) -> tuple[list[Path], list[str]]:
    """(files, class names) under ``split_dir``/<class>/, warning about stray and unsupported files."""
    split_dir = Path(split_dir)
    files, labels = [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = 0
        for p in sorted(class_dir.rglob("*")):
            if not p.is_file() or is_stray(p):
                continue
            if not is_audio_file(p):
                warn(f"{p}: unsupported extension '{p.suffix}', skipped")
                continue
            files.append(p)
            labels.append(class_dir.name)
            found += 1
        if found == 0:
            warn(f"{class_dir}: empty class folder, skipped")
    return files, labels


@dataclasses.dataclass
class Clips:
    """Decoded clips of one split: features, optional audio, labels, content hashes."""
    x: np.ndarray                     # (n, n_frames, n_mels) float32
    y: np.ndarray                     # (n,) int labels
    files: list[Path]
    hashes: list[str]
    audio: list[np.ndarray] | None = None

    def subset(self, idx) -> "Clips":
        """The clips at ``idx``, in that order; all of them in order share this one's arrays (no copy of x)."""
        idx = np.asarray(idx, int)
        if np.array_equal(idx, np.arange(len(self.y))):   # the common case: nothing dropped, and x is large
            return dataclasses.replace(self)
        return Clips(self.x[idx], self.y[idx], [self.files[i] for i in idx], [self.hashes[i] for i in idx],
                     None if self.audio is None else [self.audio[i] for i in idx])


def cached_audio(path, digest: str, cfg: FeatureConfig, cache: FeatureCache | None) -> np.ndarray:
    """The first window of ``path`` (content hash ``digest``) at ``cfg.sr``, float32, through the audio cache.

    Cached as decoded, in float32: a map computed from a cached clip is the
    map of a fresh decode, which is what inference computes. (Cached as
    float16, as until 2026-12-05, near-silent samples rounded to zero, and a
    clip's PCEN map moved by up to 0.9 standard deviations with whether its
    audio was in the cache yet.) Raises :class:`AudioError` for an unreadable file.
    """
    key = f"{cfg.sr}-{cfg.window_samples}"
    y = cache.get("audio", key, digest) if cache else None
    if y is None:
        y = load_audio(path, cfg.sr, cfg.window_seconds)
        if cache:
            cache.put("audio", key, digest, y)
    return y


def read_manifest(data_dir: Path) -> list[dict]:
    """The rows of ``data_dir``/manifest.csv (file, class, split, hash, source); [] when there is none."""
    path = Path(data_dir) / "manifest.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_clips(files, labels, classes, cfg: FeatureConfig, cache: FeatureCache | None = None,
               with_audio: bool = False, desc: str = "features") -> tuple[Clips, int]:
    """Decode and featurise ``files`` (through the cache); returns (clips, number skipped).

    Unreadable files get a one-line warning and are skipped, never fatal.
    """
    index = {c: i for i, c in enumerate(classes)}
    xs, ys, kept, hashes, audio, skipped = [], [], [], [], [], 0
    for path, label in tqdm(list(zip(files, labels)), desc=desc, unit="clip", disable=None):
        try:
            digest = file_hash(path)
            x = cache.get("features", cfg.key(), digest) if cache else None
            y = cached_audio(path, digest, cfg, cache) if with_audio or x is None else None
            if x is None:
                # float16, as the cache keeps them: the run that fills the cache sees the features every later run reads
                x = clip_features(y.astype(np.float32), cfg).astype(np.float16)
                if cache:
                    cache.put("features", cfg.key(), digest, x)
        except AudioError as e:
            warn(f"skipping {e}")
            skipped += 1
            continue
        xs.append(x.astype(np.float32))
        ys.append(index[label])
        kept.append(Path(path))
        hashes.append(digest)
        if with_audio:
            audio.append(y.astype(np.float32))
    x = np.stack(xs) if xs else np.zeros((0, cfg.n_frames, cfg.n_mels), np.float32)
    return Clips(x, np.asarray(ys, int), kept, hashes, audio if with_audio else None), skipped


def drop_rare_classes(clips: Clips, classes: list[str], where) -> tuple[Clips, list[str]]:
    """Drop classes with fewer than ``MIN_CLIPS_PER_CLASS`` readable clips (with a warning); re-index labels."""
    counts = np.bincount(clips.y, minlength=len(classes))
    kept = [c for c, n in zip(classes, counts) if n >= MIN_CLIPS_PER_CLASS]
    for c, n in zip(classes, counts):
        if n < MIN_CLIPS_PER_CLASS:
            warn(f"class '{c}' has only {n} readable clip(s) in {where}; need {MIN_CLIPS_PER_CLASS}, skipped")
    if len(kept) < 2:
        raise DatasetError(f"{where}: need at least 2 classes with {MIN_CLIPS_PER_CLASS}+ readable clips each")
    new_index = {classes.index(c): i for i, c in enumerate(kept)}
    subset = clips.subset([i for i, y in enumerate(clips.y) if y in new_index])
    subset.y = np.asarray([new_index[y] for y in subset.y], int)
    return subset, kept


@dataclasses.dataclass
class DataSplits:
    """Everything a training run consumes: train/val carved from Training, and Test."""
    train: Clips
    val: Clips
    test: Clips
    classes: list[str]
    manifest_hash: str
    skipped: int


def load_labelled(data_dir, cfg: FeatureConfig, with_audio: bool = False,
                  cache_dir=DEFAULT_CACHE) -> tuple[Clips, Clips, list[str], int]:
    """Load every labelled clip: (Training clips, Test clips, class names, number of unreadable files skipped).

    Classes with fewer than ``MIN_CLIPS_PER_CLASS`` readable training clips are
    dropped with a warning, and so are Test clips of classes not in Training.
    """
    data_dir = Path(data_dir)
    train_dir, test_dir = data_dir / "Training", data_dir / "Test"
    if not train_dir.is_dir():
        raise DatasetError(f"{train_dir}: no training data")
    files, labels = list_class_files(train_dir)
    found = sorted(set(labels))
    cache = FeatureCache(cache_dir) if cache_dir else None
    train_all, skipped = load_clips(files, labels, found, cfg, cache, with_audio, desc="training features")
    # counted after decoding: a class whose clips are all unreadable must not become an untrained output
    train_all, classes = drop_rare_classes(train_all, found, train_dir)
    test_files, test_labels = list_class_files(test_dir) if test_dir.is_dir() else ([], [])
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        warn(f"{test_dir}: classes {unknown} are not in training, their clips are skipped")
    pairs = [(f, c) for f, c in zip(test_files, test_labels) if c in classes]
    test, test_skipped = load_clips([f for f, _ in pairs], [c for _, c in pairs], classes, cfg, cache,
                                    with_audio, desc="test features")
    if len(test.y) == 0:
        raise DatasetError(f"{test_dir}: no test clips; run download_data.py to make a Training/Test split")
    return train_all, test, classes, skipped + test_skipped


def split_validation(training: Clips, test: Clips, classes: list[str], skipped: int, seed: int,
                     val_size: float = 0.15, groups=None) -> DataSplits:
    """The run's splits: a stratified validation share of ``training`` carved by :func:`group_split`, and ``test``.

    ``groups`` (one key per training clip; default: the clips' content
    hashes) are kept whole on one side. The manifest hash names which clips
    are on the training and on the test side.
    """
    is_val = group_split(training.y, training.hashes if groups is None else groups, val_size, seed + 1)
    manifest = hashlib.sha1("\n".join(sorted(
        f"{s}/{classes[y]}/{h}" for s, part in (("train", training), ("test", test))
        for y, h in zip(part.y, part.hashes))).encode()).hexdigest()[:16]
    return DataSplits(training.subset(np.flatnonzero(~is_val)), training.subset(np.flatnonzero(is_val)),
                      test, classes, manifest, skipped)


def load_splits(data_dir, cfg: FeatureConfig, seed: int, val_size: float = 0.15,
                with_audio: bool = False, cache_dir=DEFAULT_CACHE) -> DataSplits:
    """Load Training and Test, and carve a stratified, duplicate-aware validation split from Training.

    Classes with fewer than ``MIN_CLIPS_PER_CLASS`` readable training clips are
    dropped with a warning. Test is only ever used for the final report.
    """
    return split_validation(*load_labelled(data_dir, cfg, with_audio, cache_dir), seed, val_size)


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights n / (k * count): each class contributes equally to the loss."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {i: float(len(y) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}
