#!/usr/bin/env python
"""Why a distilled student scores what it scores, measured on finished runs
(``mkd_bench.diagnose``): every loss term against the iteration, the reconstruction error per
level (MKD's decoder, the students' own features, the baseline) and how each level is weighed
(its loss terms and the gradient each sends into the student). Writes ``report.md`` and PNGs
into ``--output-dir``; ``--help`` details each section.

    python tools/diagnose_mkd.py --runs output/benchmark_distill/shapes/mkd/seed0-* \\
        output/benchmark_distill/shapes/mimic/seed0-* \\
        output/benchmark_distill/shapes/none/seed0-* --images 32 --output-dir output/diagnose
"""
from mkd_bench.diagnose.cli import main

if __name__ == "__main__":
    main()
