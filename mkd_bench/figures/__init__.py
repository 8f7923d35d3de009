"""Figures of trained runs: MKD's reconstructions of the teacher's features
(``reconstructions``) and segmentation predictions side by side (``sem_seg``)."""
