"""Deterministic generator of the "MKD shapes" COCO-format instance dataset: the CPU proxy.

Each image holds 1-6 small plain geometric shapes of eight classes (circle, square, triangle, star,
cross, hexagon, ring, diamond) on a smooth two-colour gradient. Colours are random, so the outline
is the only cue to the class; rotations stay small so that a square never becomes a diamond.
Shapes do not overlap. Unlike the digits (see digits.py), a from-scratch RetinaNet learns
these in a few hundred CPU iterations, so a longer-trained teacher knows clearly more than a
short-trained student: the regime a distillation method can be judged in. Nothing is downloaded;
the dataset is rebuilt byte for byte from its seed. coco_writer.py writes the images and the json.
"""
import functools

import numpy as np
from PIL import Image, ImageDraw

from .coco_writer import (
    SPLITS,
    check_split_arguments,
    coco_categories,
    generate_splits,
    mask_to_polygons,
    write_coco_split,
)

CATEGORY_NAMES = ["circle", "square", "triangle", "star", "cross", "hexagon", "ring", "diamond"]
DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_VAL = 300
DEFAULT_IMAGE_SIZE = 128
MAX_OBJECTS_PER_IMAGE = 6
# Bumped whenever the rendering changes: a split on disk written by another version is stale
# and regenerated.
GENERATOR_VERSION = 2

# A shape's bounding-box side, as a fraction of the image side, is log-uniform in this range:
# 15-51 px at 128 px, so that every shape falls on the dense anchor grids of P3-P5. Version 1
# (32-96 px) learned more slowly: its medium shapes matched the 2x2 grid of P6 poorly (at 200
# iterations APm 6 against APs 19).
_SIDE_FRACTION = (0.12, 0.4)
_MAX_ROTATION_DEGREES = 15.0
_SUPERSAMPLING = 4  # shapes are drawn this much larger, then averaged down to a soft matte
_PLACEMENT_TRIES = 20
_MIN_COLOUR_DISTANCE = 0.35  # RGB distance (channels in [0, 1]) of a shape from its backdrop


def generate_split(root, split, num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0, workers=None):
    """Write `root/<split>/*.jpg` and `root/annotations/instances_<split>.json`; return the json.

    Each image has its own random stream keyed by (seed, split, index), so the output does not
    depend on `workers` (default: one process per CPU core). The json is written last and
    atomically: its presence means the split is complete.
    """
    check_split_arguments(root, split, num_images, image_size)
    render = functools.partial(_render_shapes_image, split, image_size, seed)
    info = {"description": "MKD shapes: plain geometric shapes on gradients",
            "version": GENERATOR_VERSION}
    return write_coco_split(root, split, num_images, image_size, seed, workers, render, info,
                            coco_categories(CATEGORY_NAMES, "shape"))


def generate_dataset(
    root,
    seed=0,
    num_train=DEFAULT_NUM_TRAIN,
    num_val=DEFAULT_NUM_VAL,
    image_size=DEFAULT_IMAGE_SIZE,
    workers=None,
):
    """Generate both splits from one seed (val draws its own streams); returns {split: json}."""
    return generate_splits(generate_split, root, seed, num_train, num_val, image_size, workers)


def _render_shapes_image(split, image_size, seed, index):
    """Image `index`: (uint8 pixels, [(category_id, bbox, polygons, area)])."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    image = _background(rng, image_size)
    count = rng.integers(1, MAX_OBJECTS_PER_IMAGE + 1)
    sides = np.exp(rng.uniform(*np.log(_SIDE_FRACTION), size=count)) * image_size
    occupied = np.zeros((image_size, image_size), dtype=bool)
    instances = []
    for side in sorted(sides, reverse=True):  # the largest first, while there is room
        category = int(rng.integers(len(CATEGORY_NAMES)))
        matte = _shape_matte(rng, category, side)
        mask = matte >= 0.5
        position = _place(rng, mask, occupied)
        if position is None:
            continue
        top, left = position
        window = (slice(top, top + matte.shape[0]), slice(left, left + matte.shape[1]))
        backdrop = image[window]
        colour = _colour(rng, backdrop.mean(axis=(0, 1)))
        alpha = matte[:, :, None]
        image[window] = backdrop * (1.0 - alpha) + colour * alpha
        occupied[window] |= mask
        # The matte is cropped to its mask, so the mask's box is the window.
        bbox = [left, top, mask.shape[1], mask.shape[0]]
        instances.append(
            (category + 1, bbox, mask_to_polygons(mask, origin=(left, top)), float(mask.sum()))
        )
    noise = rng.standard_normal((image_size, image_size, 1), dtype=np.float32)
    image = image * 255.0 + noise * np.float32(rng.uniform(0.0, 6.0))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), instances


def _background(rng, size):
    """A linear gradient between two muted colours in a random direction, float RGB in [0, 1]."""
    grey = rng.uniform(0.2, 0.8)
    start, end = (grey + rng.uniform(-0.2, 0.2, size=(2, 3))).clip(0.0, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) / np.sqrt(0.5) + 0.5
    ramp = ramp.clip(0.0, 1.0)[:, :, None]
    return (start * (1.0 - ramp) + end * ramp).astype(np.float32)


def _colour(rng, backdrop_colour):
    """A random colour far enough from the backdrop's to be seen: the class is in the outline,
    never in the colour."""
    for _ in range(20):
        colour = rng.uniform(0.0, 1.0, size=3)
        if np.linalg.norm(colour - backdrop_colour) >= _MIN_COLOUR_DISTANCE:
            return colour.astype(np.float32)
    return (1.0 - np.round(backdrop_colour)).astype(np.float32)  # the opposite corner of the cube


def _shape_matte(rng, category, side):
    """Soft matte (float32 in [0, 1]) of a shape whose bounding box is about `side` px square."""
    aspect = rng.uniform(0.9, 1.1)
    angle = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
    outer, hole = _outline(rng, CATEGORY_NAMES[category])
    scale = np.array([aspect, 1.0 / aspect]) * side / 2.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    outer = (outer * scale) @ rotation.T
    hole = None if hole is None else (hole * scale) @ rotation.T
    extent = int(np.ceil(np.abs(outer).max() * 2)) + 2
    centre = extent / 2.0
    canvas = Image.new("L", (extent * _SUPERSAMPLING,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in (outer + centre) * _SUPERSAMPLING], fill=255)
    if hole is not None:
        draw.polygon([tuple(p) for p in (hole + centre) * _SUPERSAMPLING], fill=0)
    matte = np.asarray(canvas, dtype=np.float32) / 255.0
    matte = matte.reshape(extent, _SUPERSAMPLING, extent, _SUPERSAMPLING).mean(axis=(1, 3))
    rows, cols = np.nonzero(matte >= 0.5)
    return matte[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _outline(rng, name):
    """(outline, hole or None) of a shape as (N, 2) x, y points inside [-1, 1]^2."""
    def regular(count, radius=1.0, phase=0.0):
        turns = phase + 2 * np.pi * np.arange(count) / count
        return radius * np.stack([np.sin(turns), -np.cos(turns)], axis=1)

    if name == "circle":
        return regular(64), None
    if name == "ring":
        return regular(64), regular(64, rng.uniform(0.45, 0.65))
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float), None
    if name == "diamond":  # taller than wide, so that no rotation turns it into a square
        return np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]]), None
    if name == "triangle":
        return regular(3) + [0, 0.25], None
    if name == "hexagon":
        return regular(6, phase=np.pi / 6 * rng.integers(2)), None
    if name == "star":
        points = regular(10)
        points[1::2] *= rng.uniform(0.4, 0.5)
        return points, None
    if name == "cross":
        w = rng.uniform(0.3, 0.4)
        return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                         [-w, w], [-1, w], [-1, -w], [-w, -w]]), None
    raise ValueError(f"unknown shape {name!r}: expected one of {CATEGORY_NAMES}")


def _place(rng, mask, occupied):
    """(top, left) where `mask` touches no other shape, or None if a few random tries fail."""
    height, width = mask.shape
    size = occupied.shape[0]
    if height > size or width > size:
        return None
    for _ in range(_PLACEMENT_TRIES):
        top, left = int(rng.integers(size - height + 1)), int(rng.integers(size - width + 1))
        if not (occupied[top : top + height, left : left + width] & mask).any():
            return top, left
    return None

