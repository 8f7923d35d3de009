"""The research harness around ``mkd``: the generated toy datasets, the distillation benchmark
(pairs, runs and their cache, tuning, tables), the diagnosis, timing, pretraining, figures and
the demo. It depends on ``mkd``; ``mkd`` never imports it.

Importing it registers the toy datasets, as importing ``detectron2.data`` registers
Detectron2's: its tools read runs' saved YAML configs, which run no registration code.
"""
from .datasets import register_all

register_all()
