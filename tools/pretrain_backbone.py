#!/usr/bin/env python
"""Pre-trains the ResNet bottom-up of a detector config by classifying crops of the instances of
its own train split (the CPU proxy's stand-in for ImageNet weights), cached by its settings::

    python tools/pretrain_backbone.py --config-file configs/shapes/student.py

It writes ``<output-root>/<name>-<hash>/model_final.pth`` and links it as
``<output-root>/<dataset>_R<depth>.pth`` (``--link``), the path configs load. Every option:
``--help`` (``mkd_bench.pretrain``).
"""
from mkd_bench.pretrain import main

if __name__ == "__main__":
    main()
