#!/usr/bin/env python
"""Generate a built-in dataset (`mkd_shapes_*` or `mkd_digits_*`) ahead of time.

Training generates it on first use anyway; this tool lets you pick another seed or size, or
pay the generation time up front. Needs the `builtin` extra (scipy, scikit-learn, scikit-image).
Example:
    python tools/make_dataset.py --dataset shapes --seed 0
"""
import argparse
import sys
import time

from mkd_bench.datasets import GENERATOR_SEEDS, GENERATORS, builtin_root, describe_split


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        choices=list(GENERATORS),
        default="shapes",
        help="shapes: the CPU proxy of configs/shapes/; shapes_seed1: its second instance "
        "(generator seed 1); digits: its harder variant, of configs/builtin/ (default: shapes)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="output directory (default: mkd_<dataset> under $MKD_DATASETS, else under "
        "$DETECTRON2_DATASETS, else under ./datasets: where training looks for it)",
    )
    parser.add_argument("--seed", type=int, default=None,
                        help="same seed, same bytes (default: the dataset's, 0 but for "
                        "shapes_seed1)")
    for option, constant in (("--num-train", "DEFAULT_NUM_TRAIN"),
                             ("--num-val", "DEFAULT_NUM_VAL"),
                             ("--image-size", "DEFAULT_IMAGE_SIZE")):
        defaults = ", ".join(f"{getattr(module, constant)} {key}"
                             for key, module in GENERATORS.items())
        parser.add_argument(option, type=int, default=None,
                            help=f"default: the dataset's ({defaults})")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: one per CPU core)"
    )
    args = parser.parse_args(argv)
    generator = GENERATORS[args.dataset]
    if args.seed is None:
        args.seed = GENERATOR_SEEDS.get(args.dataset, 0)
    args.root = args.root or builtin_root(args.dataset)
    for name in ("num_train", "num_val", "image_size"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(generator, f"DEFAULT_{name.upper()}"))
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        json_files = GENERATORS[args.dataset].generate_dataset(
            args.root, args.seed, args.num_train, args.num_val, args.image_size, args.workers
        )
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    elapsed = time.perf_counter() - start
    for json_file in json_files.values():
        print(describe_split(json_file))
    print(f"generated under {args.root} (seed {args.seed}) in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
