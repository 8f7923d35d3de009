#!/usr/bin/env python
"""``make demo``: MKD end to end on the shapes proxy, on CPU, in about 12 minutes on 2 cores
(dataset, pretrained bottom-up, teacher, then the student without and with MKD; a table and
AP against iteration)::

    python tools/shapes_demo.py [--output-dir ./demo_output]
    python tools/shapes_demo.py --teacher-iter 600 --student-iter 300   # the benchmark's
    python tools/shapes_demo.py --smoke                                 # a few iterations (CI)

Every option and stage: ``--help`` (``mkd_bench.demo``). Not Detectron2's ``demo/demo.py``,
which runs a trained model on images.
"""
from mkd_bench.demo import main

if __name__ == "__main__":
    main()
