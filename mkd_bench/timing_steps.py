"""What one job of ``mkd_bench.timing`` runs (``tools/time_iteration.py``): the fixed
synthetic batch, the clock, and the steps it repeats: (a) the student's training step, (b) the
teacher's backbone forward, (c) MKD's training step, with and without per-level logging, and
the pieces (c) is broken down into. The timing job interleaves them all (``measure_times``); a
memory job repeats one row's step with only what that row needs built (``row_step``)."""
import statistics
import time

import torch
from detectron2.config import instantiate
from detectron2.structures import BitMasks, Boxes, Instances

ROWS = {
    "student": "(a) student training (fwd+bwd+step)",
    "teacher": "(b) teacher backbone forward (eval, no_grad)",
    "mkd": "(c) MKD training (fwd+bwd+step)",
}
LOGGING = "mkd_logging"  # (c) with per-level logging every iteration: timed, not a memory row


def num_classes(detector_cfg) -> int:
    """RetinaNet keeps it on the model, GeneralizedRCNN on its ROI heads."""
    if "num_classes" in detector_cfg:
        return detector_cfg.num_classes
    return detector_cfg.roi_heads.num_classes


def synthetic_batch(batch_size, size, classes, device, seed=0):
    """Random images with three random boxes, classes and box-shaped bitmasks each (like
    ``tests/helpers.py``'s batch), already on ``device``."""
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for i in range(batch_size):
        image = torch.randint(0, 256, (3, size, size), generator=g).float()
        corner = torch.rand(3, 2, generator=g) * size / 2
        extent = (0.125 + 0.375 * torch.rand(3, 2, generator=g)) * size
        boxes = torch.cat([corner, corner + extent], dim=1)
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        for j, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[j, y0:y1, x0:x1] = True
        inst = Instances((size, size), gt_boxes=Boxes(boxes),
                         gt_classes=torch.randint(0, classes, (3,), generator=g),
                         gt_masks=BitMasks(masks))
        inputs.append({"image": image.to(device), "instances": inst.to(device),
                       "image_id": i, "height": size, "width": size})
    return inputs


class Clock:
    """Wall time of one call, synchronised with the GPU when there is one."""

    def __init__(self, device):
        self.cuda = device == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def median_ms(times) -> float:
    return 1000 * statistics.median(times)


def build_optimizer(cfg, model):
    cfg.optimizer.params.model = model
    return instantiate(cfg.optimizer)


def build_mkd(cfg, device):
    """The MKD model, its per-level logging off: the storage of a benchmark stays at iteration
    0, which every period divides; the logging's own cost is timed apart (``mkd_logging``)."""
    model = instantiate(cfg.model)
    model.teacher_loaded = True  # random weights: timing does not depend on them
    model.distiller.log_period = 0
    return model.to(device).train()


def logging_step(model, optimizer, batch, clock):
    """(c) logging its per-level values on every iteration (``log_period=1``)."""
    step, _ = training_step(model, optimizer, batch, clock)

    def logged():
        model.distiller.log_period = 1
        try:
            step()
        finally:
            model.distiller.log_period = 0

    return logged


def training_step(model, optimizer, batch, clock):
    """(a) and (c): Detectron2's ``SimpleTrainer.run_step`` on a fixed batch; also returns the
    list that collects the times of its optimizer steps."""
    step_times = []

    def step():
        losses = sum(model(batch).values())
        optimizer.zero_grad()
        losses.backward()
        step_times.append(clock(optimizer.step))

    return step, step_times


def teacher_forward(teacher, batch):
    """(b): the teacher's backbone on its own preprocessed batch."""
    images = teacher.preprocess_image(batch).tensor

    @torch.no_grad()
    def forward():
        teacher.backbone(images)

    return forward


def row_step(row, cfg, args, batch, clock):
    """The step a memory row repeats, with only what that row needs built."""
    if row == "teacher":
        teacher = instantiate(cfg.model.teacher).to(args.device).eval().requires_grad_(False)
        return teacher_forward(teacher, batch)
    if row == "student":
        model = instantiate(cfg.model.student).to(args.device).train()
    else:
        model = build_mkd(cfg, args.device)
    return training_step(model, build_optimizer(cfg, model), batch, clock)[0]


def breakdown_pieces(model, batch):
    """The pieces of an MKD iteration as separate calls, and the leaf tensors whose ``grad``
    they fill. Inputs of the decoder and of the losses are detached leaves that require grad,
    so backward runs through the piece and stops at its input."""
    student, distiller = model.student, model.distiller
    images = student.preprocess_image(batch).tensor
    mask = model.draw_masks(batch)

    def backbone(masked):
        features = model.masked_student_features(images, mask if masked else None)
        sum(features[k].sum() for k in model.levels).backward()

    with torch.no_grad():
        features = model.masked_student_features(images, mask)
        teacher = model.teacher_features(batch, images)
        features = {k: features[k].requires_grad_() for k in model.levels}
        teacher = {k: teacher[k] for k in model.levels}
        recon = {k: v.requires_grad_() for k, v in distiller.reconstruct(features, mask).items()}
    ones = {k: torch.ones_like(v) for k, v in recon.items()}

    def decoder():
        out = distiller.reconstruct(features, mask)
        torch.autograd.backward([out[k] for k in ones], [ones[k] for k in ones])

    def losses():
        terms = distiller.level_terms(recon, teacher, mask)
        sum(distiller.weighted_losses(terms).values()).backward()

    pieces = {
        "student_task": lambda: sum(student(batch).values()).backward(),
        "mask_draw": lambda: model.draw_masks(batch),
        "backbone_masked": lambda: backbone(True),
        "backbone_clean": lambda: backbone(False),
        "teacher_forward": lambda: model.teacher_features(batch, images),
        "decoder": decoder,
        "losses": losses,
    }
    return pieces, [*features.values(), *recon.values()]


def measure_times(cfg, args, batch, clock):
    """All timings in one process, interleaved step by step, so that the load of other
    processes and its drifts hit every row and piece alike."""
    model = build_mkd(cfg, args.device)
    student_step, _ = training_step(
        model.student, build_optimizer(cfg, model.student), batch, clock
    )
    optimizer = build_optimizer(cfg, model)
    mkd_step, step_times = training_step(model, optimizer, batch, clock)
    pieces, leaves = breakdown_pieces(model, batch)
    pieces = {"student": student_step, "teacher": teacher_forward(model.teacher, batch),
              "mkd": mkd_step, LOGGING: logging_step(model, optimizer, batch, clock), **pieces}
    times = {k: [] for k in pieces}
    for i in range(args.warmup + args.iters):
        for name, piece in pieces.items():
            elapsed = clock(piece)
            model.zero_grad(set_to_none=True)
            for leaf in leaves:
                leaf.grad = None
            if i >= args.warmup:
                times[name].append(elapsed)
    ms = {k: median_ms(v) for k, v in times.items()}
    parts = {k: ms[k] for k in pieces if k not in ROWS and k != LOGGING}
    parts["optimizer_step"] = median_ms(step_times[args.warmup:])
    parts["second_pass"] = parts["backbone_clean"] if model.task_pass == "clean" else 0.0
    parts["masking"] = parts["mask_draw"] + parts["backbone_masked"] - parts["backbone_clean"]
    return {"ms": {k: ms[k] for k in ROWS}, "breakdown": parts, "logging_ms": ms[LOGGING]}
