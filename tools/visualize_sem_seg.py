#!/usr/bin/env python
"""Semantic segmentation models side by side (``mkd_bench.figures.sem_seg``): a few val images
in a grid, a row per image (the image, its ground truth, then each model's predicted labels),
one colour per class.

    python tools/visualize_sem_seg.py --output predictions.png \\
        --model teacher output/teachers/teacher-<hash> \\
        --model student output/benchmark_distill/shapes_seg/none/seed0-<hash> \\
        --model "student + MKD" configs/shapes_seg/mkd.py output/shapes_seg/mkd/model_final.pth

A model is a run directory of ``tools/train_net.py`` or a config file and a checkpoint.
"""
from mkd_bench.figures.sem_seg import main

if __name__ == "__main__":
    main()
