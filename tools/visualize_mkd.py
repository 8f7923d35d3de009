#!/usr/bin/env python
"""What MKD's decoder learned (``mkd_bench.figures.reconstructions``): per image, a PNG with a
row per distilled level: the masked student input, the teacher's feature energy, the decoder's
reconstruction before and after training, and the error after.

    python tools/visualize_mkd.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \\
        --checkpoint output/retinanet_R50_to_R18_mkd/model_final.pth --images 2

Config overrides (``path.key=value``) come last; after ``--image-ids``, separate them by ``--``.
"""
from mkd_bench.figures.reconstructions import main

if __name__ == "__main__":
    main()
