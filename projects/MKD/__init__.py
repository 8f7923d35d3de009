"""Masked Knowledge Distillation for Detectron2."""
