"""The commands behind every number in the README; run each from the repository root as ``python -m bench.NAME``."""
