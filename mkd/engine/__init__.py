"""Training with Detectron2's own trainer and hooks (``train``), made safe for day-long runs:
atomic checkpoints and exact resume (``resume``), overrides that refuse unknown keys
(``overrides``), and datasets checked before any loader is built (``datasets``)."""
