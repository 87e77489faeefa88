"""A folder of compiled XLA programs, so that a second run of a recipe compiles nothing.

XLA compiles ``enhance.py``'s training step in about 8 s, and each validation
batch shape in about 1 s, on every run: the same programs for the same
network and shapes. TensorFlow can write each program it compiles to a
folder and read it back in a later run (``--tf_xla_persistent_cache_directory``
in ``TF_XLA_FLAGS``), keyed by a fingerprint of the program and the device,
so a changed network, batch shape or TensorFlow compiles anew. The folder
holds compiled code that TensorFlow runs: it is the toolkit's own cache,
written by this machine's runs, never taken from a model directory or a
dataset. Deleting it costs one compilation.
"""
from __future__ import annotations

import os
from pathlib import Path

FLAG = "--tf_xla_persistent_cache_directory"


def use_compile_cache(cache_dir) -> Path | None:
    """Have TensorFlow keep the XLA programs it compiles under ``cache_dir``/xla; returns that folder.

    Sets ``TF_XLA_FLAGS``, which TensorFlow reads when it first compiles, so
    call it before anything is compiled. Returns None, changing nothing, when
    ``cache_dir`` is None (no cache) or ``TF_XLA_FLAGS`` already names a
    folder (the user's choice stands).
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if cache_dir is None or FLAG in flags:
        return None
    folder = Path(cache_dir).resolve() / "xla"
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={folder}".strip()
    return folder
