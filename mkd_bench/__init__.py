"""The research harness around ``mkd``: the generated toy datasets, the distillation benchmark
(pairs, runs and their cache, tuning, tables), the diagnosis, timing, pretraining, figures and
the demo. It depends on ``mkd``; ``mkd`` never imports it."""
