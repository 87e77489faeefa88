"""core.compile_cache: XLA programs kept on disk, so a second run compiles nothing."""
import os
import subprocess
import sys
from pathlib import Path

from core.compile_cache import FLAG, use_compile_cache

ROOT = Path(__file__).resolve().parent.parent


def test_the_flag_names_the_cache_folder_and_leaves_other_flags_and_a_users_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", "")   # recorded, so that what use_compile_cache sets is undone too
    assert use_compile_cache(tmp_path) == tmp_path.resolve() / "xla"
    assert os.environ["TF_XLA_FLAGS"] == f"{FLAG}={tmp_path.resolve() / 'xla'}"
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=2")
    use_compile_cache(tmp_path)
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=2 {FLAG}={tmp_path.resolve() / 'xla'}"
    monkeypatch.setenv("TF_XLA_FLAGS", f"{FLAG}=/elsewhere")
    assert use_compile_cache(tmp_path) is None and os.environ["TF_XLA_FLAGS"] == f"{FLAG}=/elsewhere"
    monkeypatch.delenv("TF_XLA_FLAGS")
    assert use_compile_cache(None) is None and "TF_XLA_FLAGS" not in os.environ


FIT_ONCE = """
import sys
from core.compile_cache import use_compile_cache
use_compile_cache(sys.argv[1])
import keras, numpy as np
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
model.fit(np.ones((16, 8), np.float32), np.eye(3, dtype=np.float32)[np.arange(16) % 3], epochs=1, verbose=0)
"""


def test_a_second_run_finds_its_compiled_step_in_the_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}

    def fit_once():
        subprocess.run([sys.executable, "-c", FIT_ONCE, str(tmp_path)], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "xla").iterdir()}

    first = fit_once()
    assert first, "the XLA-compiled training step was not written to the cache folder"
    assert fit_once() == first   # read back, not compiled and written again
