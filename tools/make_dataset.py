#!/usr/bin/env python
"""Generate the built-in dataset (`mkd_digits_{train,val}`) ahead of time.

Training generates it on first use anyway; this tool lets you pick another seed or size, or
pay the generation time up front. Example:
    python tools/make_dataset.py --root datasets/mkd_digits --seed 0
"""
import argparse
import json
import sys
import time

from mkd.data import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    builtin_root,
    generate_dataset,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=builtin_root(),
        help="output directory (default: $MKD_DATASETS or $DETECTRON2_DATASETS/mkd_digits, "
        "where training looks for it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: one per CPU core)"
    )
    return parser.parse_args(argv)


def summarize(json_file):
    """One line per split: images, instances and their COCO size buckets."""
    with open(json_file) as f:
        dataset = json.load(f)
    areas = [annotation["area"] for annotation in dataset["annotations"]]
    small = sum(area < 32**2 for area in areas)
    large = sum(area > 96**2 for area in areas)
    return (
        f"{json_file}: {len(dataset['images'])} images, {len(areas)} instances "
        f"(small {small}, medium {len(areas) - small - large}, large {large})"
    )


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        json_files = generate_dataset(
            args.root, args.seed, args.num_train, args.num_val, args.image_size, args.workers
        )
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    elapsed = time.perf_counter() - start
    for json_file in json_files.values():
        print(summarize(json_file))
    print(f"generated under {args.root} (seed {args.seed}) in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
