"""Fill Animals_Sounds/ with the Animal Sound Dataset, split into Training/ and Test/.

    python download_data.py                          # download the public archive (cached in ~/.keras)
    python download_data.py --source ../shared/data/animal-sound-dataset --noise-source ../shared/data/noise/wind

Turkish folder names become English classes (Kedi-Part1 + Kedi-Part2 -> cat),
every clip is decoded once (unreadable ones are counted and skipped), and the
split keeps all copies of a duplicate clip on the same side.
"""
import argparse
import sys
from pathlib import Path

import common


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", type=Path, help="local zip or folder in the published layout "
                                               "(default: download the public archive)")
    p.add_argument("--url", default=common.DATASET_URL, help="archive to download when no --source is given")
    p.add_argument("--data-dir", type=Path, default=Path("Animals_Sounds"))
    p.add_argument("--test-size", type=float, default=0.2, help="share of each class held out for Test")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--noise-source", type=Path, help="folder of wind recordings to copy into Noise/wind/")
    p.add_argument("--force", action="store_true", help="replace an existing Training/Test split")
    args = p.parse_args(argv)
    if not 0 < args.test_size < 1:
        p.error("--test-size must be between 0 and 1")
    try:
        source = args.source or common.download_archive(args.url)
        summary = common.import_dataset(source, args.data_dir, args.test_size, args.seed, args.force)
        noise = common.import_noise(args.noise_source, args.data_dir) if args.noise_source else None
    except common.DatasetError as e:
        sys.exit(f"error: {e}")
    print(f"\n{'class':<10}{'Training':>10}{'Test':>8}")
    for cls, n in summary["classes"].items():
        print(f"{cls:<10}{n['Training']:>10}{n['Test']:>8}")
    total_train = sum(n["Training"] for n in summary["classes"].values())
    print(f"{'total':<10}{total_train:>10}{summary['clips'] - total_train:>8}")
    print(f"\n{summary['clips']} clips imported into {args.data_dir}, {summary['skipped']} unreadable; "
          f"{summary['duplicate_groups']} duplicate groups ({summary['duplicate_files']} files) kept on one side "
          f"of the split; manifest: {args.data_dir / 'manifest.csv'}")
    if noise is not None:
        print(f"{noise} wind recordings copied into {args.data_dir / 'Noise' / 'wind'}")


if __name__ == "__main__":
    main()
