"""FGD's published RetinaNet recipe on the shapes pair: its weights as published (alpha 1e-3,
beta 5e-4, gamma 5e-4, lambda 5e-6, temperature 0.5) and the student's neck and head initialised
from the teacher (``init_student_from_teacher``), as FGD's published numbers were obtained.

The benchmark's ``fgd`` row is the same loss with calibrated weights and no initialisation.
"""
from .fgd import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.distiller.update(alpha_fg=1e-3, beta_bg=5e-4, gamma_attention=5e-4, lambda_global=5e-6)
model.init_student_from_teacher = True
train.output_dir = "./output/shapes/fgd_recipe"
