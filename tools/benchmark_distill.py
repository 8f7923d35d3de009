#!/usr/bin/env python
"""Distillation benchmark: one teacher, one student, one schedule; a row per method (none,
mimic, FGD, FGD's published recipe, MGD, MKD) over seeds, on the shapes pair by default
(``--pair``, ``--task sem_seg``). Three commands share one cache (every run lives in a
directory named by its config hash, so an interrupted command continues where it stopped)::

    python tools/benchmark_distill.py --tune          # weight grid on the tuning seeds
    python tools/benchmark_distill.py                 # the table, on the reported seeds
    python tools/benchmark_distill.py --ablations     # MKD's open questions

``--probe N`` calibrates each method's weights at initialisation; ``--smoke`` runs any mode for
a few iterations on a few generated images. Every option: ``--help``
(``mkd_bench.distill_benchmark``).
"""
from mkd_bench.distill_benchmark import main

if __name__ == "__main__":
    main()
