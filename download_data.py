"""Fill Animals_Sounds/ with labelled clips, split into Training/ and Test/.

    python download_data.py                          # download the public archive (cached in ~/.keras)
    python download_data.py --source ../shared/data/animal-sound-dataset --noise-source ../shared/data/noise/wind
    python download_data.py --annotations recordings/ [--padding 0.5] [--background]

Turkish folder names become English classes (Kedi-Part1 + Kedi-Part2 -> cat),
every clip is decoded once (unreadable ones are counted and skipped), and the
split keeps all copies of a duplicate clip on the same side.

With --annotations, long recordings with a Raven Pro selection table or an
Audacity label file beside them (rec.wav + rec.Table.1.selections.txt,
rec.labels.txt or rec.txt) become one clip per box, and all clips of a
recording go to the same side of the split.
"""
import argparse
import sys
from pathlib import Path

import common
from core.annotation_import import BACKGROUND_DIR, import_annotations


def print_split(classes: dict) -> None:
    """The per-class Training/Test table, with totals."""
    print(f"\n{'class':<10}{'Training':>10}{'Test':>8}")
    for cls, n in classes.items():
        print(f"{cls:<10}{n['Training']:>10}{n['Test']:>8}")
    print(f"{'total':<10}{sum(n['Training'] for n in classes.values()):>10}"
          f"{sum(n['Test'] for n in classes.values()):>8}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="local zip or folder in the published layout "
                                                 "(default: download the public archive)")
    src.add_argument("--annotations", type=Path,
                     help="folder of long recordings with Raven selection tables or Audacity label files beside "
                          "them: each box becomes a training clip")
    p.add_argument("--url", default=common.DATASET_URL,
                   help="archive to download when no --source is given (default: %(default)s)")
    p.add_argument("--data-dir", type=Path, default=Path("Animals_Sounds"),
                   help="dataset folder to fill (default: %(default)s)")
    p.add_argument("--test-size", type=float, default=0.2,
                   help="share of each class held out for Test (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split (default: %(default)s)")
    p.add_argument("--noise-source", type=Path, help="folder of wind recordings to copy into Noise/wind/")
    p.add_argument("--padding", type=float, default=0.5,
                   help="with --annotations: seconds of audio kept before and after each box (default: %(default)s)")
    p.add_argument("--background", action="store_true",
                   help=f"with --annotations: also save the unannotated stretches, in 2-10 s pieces, "
                        f"to {BACKGROUND_DIR}/ as negatives")
    p.add_argument("--force", action="store_true", help="replace an existing Training/Test split")
    args = p.parse_args(argv)
    if not 0 < args.test_size < 1:
        p.error("--test-size must be between 0 and 1")
    if args.padding < 0:
        p.error("--padding must be at least 0")
    try:
        if args.annotations:
            summary = import_annotations(args.annotations, args.data_dir, args.padding, args.background,
                                         args.test_size, args.seed, args.force)
        else:
            summary = common.import_dataset(args.source or common.download_archive(args.url), args.data_dir,
                                            args.test_size, args.seed, args.force)
        noise = common.import_noise(args.noise_source, args.data_dir) if args.noise_source else None
    except common.DatasetError as e:
        sys.exit(f"error: {e}")
    print_split(summary["classes"])
    if args.annotations:
        print(f"\n{summary['clips']} clips cut from {summary['recordings']} recordings into {args.data_dir}, "
              f"{summary['background']} background clips in {args.data_dir / BACKGROUND_DIR}; skipped: "
              f"{summary['rejected']} recordings with a bad table, {summary['unreadable']} unreadable, "
              f"{summary['skipped_clips']} silent or too short clips; manifest: {args.data_dir / 'manifest.csv'}")
    else:
        print(f"\n{summary['clips']} clips imported into {args.data_dir}, {summary['skipped']} unreadable; "
              f"{summary['duplicate_groups']} duplicate groups ({summary['duplicate_files']} files) kept on one "
              f"side of the split; manifest: {args.data_dir / 'manifest.csv'}")
    if noise is not None:
        print(f"{noise} wind recordings copied into {args.data_dir / 'Noise' / 'wind'}")


if __name__ == "__main__":
    main()
