"""predict.py --engine ray: a local Ray instance classifies a folder into the same files as the local engine."""
import pytest
from test_batch import write_calls, write_toy_model

import predict

pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'ray[data]==2.60.0')")
# Ray 2.60's own DataContext reads its deprecated settings when it is created; nothing here sets them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path, capsys):
    model = write_toy_model(tmp_path / "model")
    folder = tmp_path / "recordings"
    for i, kind in enumerate(("chirp", "moo", "bark", "chirp", "moo")):
        write_calls(folder / f"site{i % 2}" / f"rec{i}.wav", [(kind, 1.0, 6.0 + 4 * i)], 8.0 + 4 * i, seed=i)
    (folder / "broken.wav").write_bytes(b"not audio" * 40)
    tables = {}
    for engine, workers in (("local", "1"), ("ray", "2")):
        # without --ray-address the ray engine starts a local Ray with --workers CPUs, and stops it when done
        predict.main(["--dir", str(folder), "--model-dir", str(model), "--engine", engine, "--workers", workers,
                      "--format", "csv", "--timeline", "--out", str(tmp_path / engine)])
        tables[engine] = [(tmp_path / engine / name).read_text() for name in ("predictions.csv",
                                                                               "predictions.errors.csv")]
    assert tables["ray"] == tables["local"]
    assert len(tables["ray"][0].splitlines()) == 1 + 5 + 7    # header, a row per recording, one per window
    assert capsys.readouterr().err.count("5 classified, 1 skipped") == 2
