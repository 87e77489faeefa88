"""The shared core of the toolkit: every script imports what it needs from here.

The core is split by concern into flat modules, re-exported here so that a
script only ever writes ``import common``:

- ``audio``     robust loading of any readable file, SNR-calibrated mixing, wind
- ``features``  the log-Mel front end, analysis windows, the on-disk cache
- ``dataset``   importing the published archive, duplicate-aware splits, class weights
- ``augment``   SpecAugment, spectral tilt, time shift, mixup, on-the-fly wind mixing
- ``training``  flags, seeds, callbacks, the fit/evaluate/publish harness
- ``reports``   metrics, artifacts written atomically, results table, charts
- ``inference`` loading a model directory safely and classifying recordings
"""
import os

# Both are needed to silence TensorFlow's start-up noise; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from audio import (AUDIO_EXTENSIONS, AudioError, active_power, fit_noise, is_audio_file, load_audio,  # noqa: E402,F401
                   load_noise_bank, mix_at_snr, stream_audio, synthetic_wind, warn)
from augment import WaveAugment, mixup, random_crop, spec_augment, time_shift  # noqa: E402,F401
from dataset import (CLASS_NAMES, DATASET_URL, DataSplits, DatasetError, canonical_class,  # noqa: E402,F401
                     class_weights, download_archive, group_split, import_dataset, import_noise, load_splits)
from features import (FeatureCache, FeatureConfig, clip_features, file_hash, iter_windows, log_mel,  # noqa: E402,F401
                      n_real_frames)
from inference import Classifier, ModelDirError, default_model_dir  # noqa: E402,F401
from reports import atomic_write, evaluate, write_charts  # noqa: E402,F401
from training import (fit_classifier, make_batches, make_parser, noise_bank, one_hot,  # noqa: E402,F401
                      run_experiment)
