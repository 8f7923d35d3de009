#!/usr/bin/env python
"""What MKD costs next to training the student alone (``mkd_bench.timing``): the time per
iteration of the student, the teacher's backbone and MKD, MKD's iteration broken down into its
pieces, and each row's peak memory, on a fixed synthetic batch with random weights. Named apart
from Detectron2's own ``tools/benchmark.py``, which times other things.

    python tools/time_iteration.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \\
        --iters 10 --image-size 160 --threads 1 --json output/time_iteration.json [k=v ...]

``--smoke`` is CI's quick run; ``--help`` says how each number is measured.
"""
from mkd_bench.timing import main

if __name__ == "__main__":
    main()
