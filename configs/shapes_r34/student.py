"""The undistilled student of the R34-teacher pair: the shapes proxy's student, unchanged."""
from ..shapes.student import (  # noqa: F401  a LazyConfig is its globals
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/shapes_r34/student"
