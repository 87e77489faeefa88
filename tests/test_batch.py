"""core.batch and predict.py --dir at scale: the journal, parallel workers, and resuming after a crash or a kill."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import ROOT, tone, write_wav
from onnx import TensorProto, helper, numpy_helper

import predict
from core import batch
from core.features import FeatureConfig

TOY_CLASSES = ["bird", "cow", "dog"]


def write_toy_model(folder):
    """A tiny ONNX model directory whose labels follow the sound: chirps are birds, low hums cows, noise dogs.

    Each window's log-Mel peak per band goes through one linear layer: high bands
    (mels 55-95, where the 2-4 kHz chirp sits) raise "bird", low bands (mels 0-29,
    the 200 Hz hum and its harmonics) raise "cow", and "dog" has a constant bias,
    so broadband noise, which lifts no band above the others, is "dog". Loads in
    milliseconds and imports no TensorFlow, so subprocesses and workers start fast.
    """
    cfg = FeatureConfig()
    low, high = np.zeros(cfg.n_mels), np.zeros(cfg.n_mels)
    low[:30], high[55:95] = 1 / 30, 1 / 40
    weights = 5 * np.stack([high - 1 / cfg.n_mels, low - 1 / cfg.n_mels, np.zeros(cfg.n_mels)], axis=1)
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["log_mel"], ["peak"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["peak", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "toy", [helper.make_tensor_value_info("log_mel", TensorProto.FLOAT, ["n", cfg.n_frames, cfg.n_mels])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", len(TOY_CLASSES)])],
        [numpy_helper.from_array(weights.astype(np.float32), "w"),
         numpy_helper.from_array(np.array([0, 0, 0.5], np.float32), "b")])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"classes": TOY_CLASSES, "features": cfg.to_dict()}))
    return folder


def write_calls(path, calls, seconds, seed=0):
    """A recording of faint noise with ``calls`` = [(kind, start_s, end_s)] of conftest's tones placed in it."""
    y = 0.01 * np.random.default_rng(seed).standard_normal(int(seconds * 16000)).astype(np.float32)
    for kind, start, end in calls:
        y[int(start * 16000):int(end * 16000)] += tone(kind, end - start, seed=seed)
    return write_wav(path, y)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("toy") / "model")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Sixteen 20 s recordings in two site folders, plus one unreadable file."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(16):
        kind = ("chirp", "moo", "bark")[i % 3]
        write_calls(root / f"site{i % 2}" / f"rec{i:02d}.wav", [(kind, 2.0 + i % 5, 12.0 + i % 5)], 20.0, seed=i)
    (root / "site0" / "broken.wav").write_bytes(b"not audio" * 40)
    return root


def run_dir(folder, model, out, *flags):
    """predict.main for a --dir run writing --format csv --timeline into ``out``; returns the table's bytes."""
    predict.main(["--dir", str(folder), "--model-dir", str(model), "--format", "csv", "--timeline",
                  "--out", str(out), *map(str, flags)])
    return (out / "predictions.csv").read_bytes()


# ---------------------------------------------------------------- the journal

def test_journal_commits_reads_and_resumes(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = batch.Journal(path, "k1")
    journal.append({"file": "a.wav", "error": "broken"})
    journal.append({"file": "b/c.wav", "probabilities": [0.25, 0.75], "ood_score": None, "windows": []})
    journal.close()
    again = batch.Journal(path, "k1")
    assert "a.wav" in again and "b/c.wav" in again and len(again) == 2 and not again.restarted
    assert again.read("b/c.wav")["probabilities"] == [0.25, 0.75]
    again.close()


def test_journal_drops_a_torn_last_line_and_appends_after_it(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = batch.Journal(path, "k")
    journal.append({"file": "a.wav", "error": "x"})
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"file": "b.wav", "probabil')     # the process was killed mid-write
    journal = batch.Journal(path, "k")
    assert len(journal) == 1 and "b.wav" not in journal
    journal.append({"file": "b.wav", "error": "y"})
    journal.close()
    assert [json.loads(line)["file"] for line in path.read_text().splitlines()[1:]] == ["a.wav", "b.wav"]


@pytest.mark.parametrize("reopen", [{"key": "other"}, {"key": "k", "resume": False}], ids=["new-key", "no-resume"])
def test_journal_starts_over_for_another_model_or_without_resume(tmp_path, reopen):
    path = tmp_path / "j.jsonl"
    journal = batch.Journal(path, "k")
    journal.append({"file": "a.wav", "error": "x"})
    journal.close()
    journal = batch.Journal(path, **reopen)
    assert len(journal) == 0 and journal.restarted
    journal.close()


def test_list_recordings_is_sorted_relative_and_audio_only(archive):
    rels = batch.list_recordings(archive)
    assert rels == sorted(rels, key=lambda r: r.split("/")) and len(rels) == 17
    assert rels[0] == "site0/broken.wav" and all(r.endswith(".wav") and not r.startswith("/") for r in rels)


# ---------------------------------------------------------------- workers

def test_records_round_trip_through_json(toy_model, archive):
    settings = batch.Settings(((str(toy_model), "onnx"),))
    clf = settings.classifier()
    rels = batch.list_recordings(archive)[:2]
    records = {r["file"]: r for r in batch.classify_local(clf, archive, rels, settings, workers=1)}
    broken = records["site0/broken.wav"]
    assert set(broken) == {"file", "error", "warnings"} and broken["error"].startswith("not readable as audio (")
    direct = clf.classify(archive / rels[1])
    restored = batch.recording_of(json.loads(json.dumps(records[rels[1]])))
    np.testing.assert_array_equal(restored.probs, direct.probs)
    assert [(w.start, w.end) for w in restored.windows] == [(0.0, 16.0), (8.0, 20.0)]
    np.testing.assert_array_equal(restored.windows[1].probs, direct.windows[1].probs)


def test_a_worker_that_dies_stops_the_run_naming_the_files_in_flight(archive, tmp_path):
    settings = batch.Settings(((str(tmp_path / "deleted-model"), "onnx"),))   # every worker fails to start
    rels = batch.list_recordings(archive)[:3]
    with pytest.raises(batch.RunInterrupted, match="a worker process died while reading one of: site0/broken.wav, "):
        list(batch.classify_local(None, archive, rels, settings, workers=2))


def test_workers_give_the_same_files_as_one_process(toy_model, archive, tmp_path, capsys):
    one = run_dir(archive, toy_model, tmp_path / "one", "--workers", "1")
    two = run_dir(archive, toy_model, tmp_path / "two", "--workers", "2")
    assert one == two
    err = capsys.readouterr().err
    assert err.count(f"warning: skipping {archive / 'site0' / 'broken.wav'}: not readable as audio") == 2


# ---------------------------------------------------------------- resuming

def test_crash_after_k_files_then_restart_gives_identical_output(toy_model, archive, tmp_path, monkeypatch, capsys):
    expected = run_dir(archive, toy_model, tmp_path / "clean", "--workers", "1")
    k = 5
    append = batch.Journal.append

    def crash_after_k(journal, record):
        if len(journal) == k:
            raise KeyboardInterrupt
        append(journal, record)

    monkeypatch.setattr(batch.Journal, "append", crash_after_k)
    with pytest.raises(SystemExit) as e:
        run_dir(archive, toy_model, tmp_path / "crashed", "--workers", "1")
    assert str(e.value.code) == f"error: interrupted; {k} finished recordings are kept: run the same command to resume"
    assert not (tmp_path / "crashed" / "predictions.csv").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert run_dir(archive, toy_model, tmp_path / "crashed", "--workers", "1") == expected
    assert f"resuming: {k} of 17 recordings already classified" in capsys.readouterr().err


def test_killed_at_a_random_point_then_restarted_gives_identical_output(toy_model, archive, tmp_path):
    """A real kill: SIGKILL to the whole process group (main process and workers) once k files are committed."""
    flags = ["--dir", str(archive), "--model-dir", str(toy_model), "--format", "raven", "--combined"]
    predict.main([*flags, "--out", str(tmp_path / "clean"), "--workers", "1"])
    expected = (tmp_path / "clean" / "detections.selections.txt").read_bytes()
    command = [sys.executable, str(ROOT / "predict.py"), *flags, "--out", str(tmp_path), "--workers", "2"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    journal = tmp_path / ".detections.journal.jsonl"
    k = random.randint(1, 14)
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while not journal.exists() or journal.read_bytes().count(b"\n") < 1 + k:
            assert proc.poll() is None, f"the run ended before {k} files were committed"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "detections.selections.txt").exists()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "resuming:" in resumed.stderr, f"killed after {k} files"
    assert (tmp_path / "detections.selections.txt").read_bytes() == expected, f"killed after {k} files"
