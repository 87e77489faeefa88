"""The shared core of the toolkit: every command starts with ``import common``.

The library lives in the package ``core/``, one concern per module, and this
module re-exports what the commands use, so that a command reads
``common.load_audio`` or ``common.Classifier`` wherever the code lives:

- ``core.audio``          robust loading of any readable file, SNR-calibrated mixing, wind
- ``core.features``       the log-Mel front end and the on-disk cache
- ``core.windows``        analysis windows over files and live streams (one mechanism)
- ``core.dataset``        importing the published archive, duplicate-aware splits, class weights
- ``core.augment``        SpecAugment, spectral tilt, time shift, mixup, on-the-fly wind mixing
- ``core.negatives``      negatives for outlier exposure (an epoch's draws among them)
- ``core.training``       flags, seeds, callbacks, the fit/evaluate/publish harness
- ``core.reports``        metrics, artifacts written atomically, results table, charts
- ``core.backends``       one model run by Keras, ONNX Runtime or LiteRT (TFLite)
- ``core.inference``      loading a model directory safely and classifying recordings
- ``core.audio_sources``  microphone and file streams for live classification
- ``core.allocator``      glibc keeps freed memory for reuse (inference and training runs)

Two modules are not re-exported because they import Keras (hence TensorFlow,
~10 s): ``core.layers`` (the custom layers saved models use) and
``core.losses`` (training-only losses). A variant imports them where it
builds its network, so ``predict.py`` on an exported model never pays for it.
"""
import os

# Both are needed to silence TensorFlow's start-up noise; set before anything imports it. Level 3 also hides
# what XLA logs as errors each time it reads back a kept program (core.compile_cache) though nothing is wrong:
# a failed text parse before the binary one, and tuning flags it takes for missing CPU features. Errors that
# matter reach Python as exceptions; TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's whole log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from core.allocator import keep_freed_memory  # noqa: E402,F401
from core.audio import (AUDIO_EXTENSIONS, WIND_CORNERS_HZ, AudioError, active_power, fit_noise,  # noqa: E402,F401
                        is_audio_file, load_audio, load_noise_bank, mix_at_snr, stream_audio, synthetic_wind, warn)
from core.audio_sources import (AudioSource, FileSource, MicrophoneSource, SourceLost,  # noqa: E402,F401
                                SourceUnavailable, list_input_devices)
from core.augment import WaveAugment, mixup, random_crop, spec_augment  # noqa: E402,F401
from core.backends import (BACKENDS, FILES, MODEL_FILE, ONNX_FILE, TFLITE_FILE, VIEW_OUTPUTS,  # noqa: E402,F401
                           ModelDirError, OnnxPredictor, TFLitePredictor)
from core.dataset import (CLASS_NAMES, DATASET_URL, DEFAULT_CACHE, DataSplits, DatasetError,  # noqa: E402,F401
                          canonical_class, class_weights, download_archive, group_split, import_dataset,
                          import_noise, list_class_files, load_clips, load_splits)
from core.features import (SCALINGS, FeatureCache, FeatureConfig, clip_features, file_hash,  # noqa: E402,F401
                           log_mel, n_real_frames, normalize_frames)
from core.front_ends import LogMel  # noqa: E402,F401
from core.inference import (Classifier, Ensemble, default_model_dir, load_classifier,  # noqa: E402,F401
                            read_model_config)
from core.negatives import draws_per_epoch, epoch_draw  # noqa: E402,F401
from core.reports import atomic_write, evaluate, write_charts  # noqa: E402,F401
from core.training import (fit_classifier, length_bucketed, make_batches, make_parser, noise_bank,  # noqa: E402,F401
                           one_hot, run_experiment)
from core.windows import SlidingWindows, iter_windows  # noqa: E402,F401
