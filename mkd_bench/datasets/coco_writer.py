"""Writing a generated dataset as a COCO split, shared by the generators (digits.py, shapes.py).

A generator renders one image at a time (`render(index) -> (pixels, instances)`); this module
checks the arguments before anything is written, renders the images in worker processes, saves
them as JPEG, turns each instance mask into polygons that rasterize back to it exactly, and
writes the json last and atomically, so that its presence means the split is complete. A split
lives where Detectron2's COCO loader expects it (`split_paths`).
"""
import functools
import importlib
import json
import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from mkd.engine.datasets import check_writable
from mkd.engine.resume import AtomicWriter

SPLITS = ("train", "val")
# Below this the generators' objects (and the digits' clutter) have no room.
MIN_IMAGE_SIZE = 64
JPEG_QUALITY = 90


def split_paths(root, split):
    """Return (json_file, image_root) of a split, the layout Detectron2's COCO loader expects."""
    json_file = os.path.join(root, "annotations", f"instances_{split}.json")
    return json_file, os.path.join(root, split)


def coco_categories(names, supercategory):
    """COCO category records; ids start at 1 as in COCO."""
    return [
        {"id": index + 1, "name": name, "supercategory": supercategory}
        for index, name in enumerate(names)
    ]


def check_split_arguments(root, split, num_images, image_size):
    """Fail before anything is written: a bad split, count or size, or an unwritable root."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: split must be one of {SPLITS}")
    check_count("num_images", num_images)
    check_image_size(image_size)
    check_writable(root)


def check_count(name, value):
    """A count of images must be a positive integer (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_image_size(image_size):
    """Images are square, `image_size` px a side, and at least MIN_IMAGE_SIZE."""
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < MIN_IMAGE_SIZE
    ):
        raise ValueError(
            f"image_size must be an integer >= {MIN_IMAGE_SIZE} (objects and clutter need room), "
            f"got {image_size!r}"
        )


def generate_splits(generate_split, root, seed, num_train, num_val, image_size, workers):
    """Both splits of a built-in dataset with its ``generate_split``, arguments checked first
    (so that a bad ``num_val`` fails before train is written); returns {split: json}."""
    check_count("num_train", num_train)
    check_count("num_val", num_val)
    check_image_size(image_size)
    check_writable(root)
    return {
        split: generate_split(root, split, count, image_size, seed, workers)
        for split, count in (("train", num_train), ("val", num_val))
    }


def write_coco_split(root, split, num_images, image_size, seed, workers, render, info,
                     categories):
    """Render `num_images` images with `render(index) -> (pixels, instances)`, in `workers`
    processes (default: one per CPU core), and write them as a COCO split; return the json file
    (written last and atomically: its presence means the split is complete).

    `instances` are (category_id, bbox xywh, polygons, area) tuples; `render` must be picklable.
    """
    json_file, image_root = split_paths(root, split)
    os.makedirs(image_root, exist_ok=True)
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    write_image = functools.partial(_write_image, image_root, image_size, render)
    workers = min(workers or os.cpu_count() or 1, num_images)
    if multiprocessing.current_process().daemon:
        workers = 1  # daemonic processes (e.g. data-loader workers) may not start children
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(write_image, range(num_images), chunksize=8))
    else:
        results = [write_image(index) for index in range(num_images)]

    images, annotations = [], []
    for image, instances in results:
        images.append(image)
        for category_id, bbox, polygons, area in instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": area,
                    "iscrowd": 0,
                    "segmentation": polygons,
                }
            )
    dataset = {
        "info": {**info, "split": split, "seed": seed},
        "licenses": [],
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }
    # An interrupted run leaves the previous json (or none), never half of one.
    with AtomicWriter(json_file, "w") as f:
        f.write(json.dumps(dataset, separators=(",", ":")))  # dumps uses the C encoder, dump not
    return json_file


def describe_split(json_file):
    """One line about a written split: images, instances and their COCO size buckets."""
    with open(json_file) as f:
        dataset = json.load(f)
    areas = [annotation["area"] for annotation in dataset["annotations"]]
    small = sum(area < 32**2 for area in areas)
    large = sum(area > 96**2 for area in areas)
    return (
        f"{json_file}: {len(dataset['images'])} images, {len(areas)} instances "
        f"(small {small}, medium {len(areas) - small - large}, large {large})"
    )


def _write_image(image_root, image_size, render, index):
    """Render and save image `index`; return its COCO image record and its instances."""
    pixels, instances = render(index)
    image = {
        "id": index + 1,
        "file_name": f"{index + 1:06d}.jpg",
        "width": image_size,
        "height": image_size,
    }
    Image.fromarray(pixels).save(
        os.path.join(image_root, image["file_name"]), quality=JPEG_QUALITY, subsampling=0
    )
    return image, instances


def mask_to_polygons(mask, origin=(0, 0)):
    """COCO polygons (flat x, y lists) that rasterize back to exactly the binary `mask`.

    Pixel (r, c) covers [c, c+1] x [r, r+1]; `origin` (x, y) is added to every point, for masks
    cropped out of a larger image. There is one polygon per 8-connected component. COCO unions
    an instance's polygons, so a hole cannot be a polygon of its own: it is spliced into its
    component's outline through a zero-width slit, which pycocotools' even-odd fill leaves empty.
    """
    ndimage = optional_import("scipy.ndimage")
    padded = np.pad(mask, 1)
    components, _ = ndimage.label(padded, structure=np.ones((3, 3)))
    contours_by_component = defaultdict(list)
    for contour in _boundary_loops(padded):
        # A contour point lies halfway between a mask pixel and a background pixel; the mask
        # pixel tells which component the contour (its outline or one of its holes) belongs to.
        (row_a, col_a), (row_b, col_b) = np.floor(contour[0]), np.ceil(contour[0])
        component = max(components[int(row_a), int(col_a)], components[int(row_b), int(col_b)])
        contours_by_component[component].append(_drop_straight_run_points(contour))
    polygons = []
    for component in sorted(contours_by_component):
        # The outline encloses the component's holes, so it has the largest area.
        outline, *holes = sorted(
            contours_by_component[component], key=lambda contour: -abs(_signed_area(contour))
        )
        for hole in holes:
            outline = _splice_hole(outline, hole)
        # (row, col) in the padded mask -> (x, y) in pixel-edge coordinates of `mask`.
        xy = np.clip(outline[:, ::-1] - 0.5, 0, [mask.shape[1], mask.shape[0]])
        polygons.append((xy + origin).ravel().tolist())
    return polygons


def optional_import(name):
    """Import a module of the `builtin` extra, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"generating the built-in datasets needs {name.split('.')[0]} ({err}): install the "
            "extra with pip install -e '.[builtin]' (or pip install scipy scikit-learn "
            "scikit-image), or generate the data elsewhere and copy it under $MKD_DATASETS"
        ) from err


def _drop_straight_run_points(loop):
    """Keep only the corners of a closed loop.

    Boundary points lie on a half-pixel grid and diagonal staircases are straight runs, so this
    shrinks polygons a lot while pycocotools still rasterizes the exact mask.
    """
    incoming = loop - np.roll(loop, 1, axis=0)
    outgoing = np.roll(loop, -1, axis=0) - loop
    cross = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]
    corners = loop[np.abs(cross) > 1e-9]
    return corners if len(corners) >= 3 else loop


def _boundary_loops(mask):
    """Closed boundary loops, as (N, 2) float arrays of (row, col), of a mask with an empty border.

    Marching squares like skimage.measure.find_contours(mask, 0.5, fully_connected="high"),
    giving the same loops (up to their starting points), but vectorized apart from following each
    loop, which makes it about three times faster: tracing is a large cost per image.
    """
    mask = mask.astype(np.uint8)
    width = mask.shape[1]
    cases = (mask[:-1, :-1] | mask[:-1, 1:] << 1 | mask[1:, 1:] << 2 | mask[1:, :-1] << 3).ravel()
    cells = np.flatnonzero(cases % 15)  # cells with both mask and background corners
    cases = cases[cells]
    saddles = _SEGMENT_SIDES[cases, 1, 0] >= 0
    cells = np.concatenate([cells, cells[saddles]])
    sides = np.concatenate([_SEGMENT_SIDES[cases, 0], _SEGMENT_SIDES[cases[saddles], 1]])
    # Doubled coordinates keep every midpoint an integer: an exact key to match segment ends.
    corner = 2 * np.stack([cells // (width - 1), cells % (width - 1)], axis=1)
    start = corner + _DOUBLED_SIDE_MIDPOINTS[sides[:, 0]]
    end = corner + _DOUBLED_SIDE_MIDPOINTS[sides[:, 1]]
    start_keys = start[:, 0] * (2 * width) + start[:, 1]
    order = np.argsort(start_keys)
    end_keys = end[order, 0] * (2 * width) + end[order, 1]
    successors = np.searchsorted(start_keys[order], end_keys).tolist()
    points = start[order] / 2.0
    visited = bytearray(len(successors))
    loops = []
    for first in range(len(successors)):
        loop, index = [], first
        while not visited[index]:
            visited[index] = 1
            loop.append(index)
            index = successors[index]
        if loop:
            loops.append(points[loop])
    return loops


def _segment_sides():
    """_SEGMENT_SIDES[case, k] = (entry side, exit side) of the k-th boundary segment in a 2x2
    cell whose corner i is in the mask iff bit i of `case` is set (-1: no such segment).

    All segments run the same way around the mask (mask on the right, rows pointing down). In a
    saddle (diagonal corners in the mask) the mask's corners are connected, as in 8-connectivity:
    each segment cuts off a background corner.
    """
    table = np.full((16, 2, 2), -1)
    for case in range(16):
        inside = [bool(case >> corner & 1) for corner in range(4)]
        crossed = [side for side, (a, b) in enumerate(_CELL_SIDES) if inside[a] != inside[b]]
        if len(crossed) == 4:
            pairs = [
                [side for side in crossed if corner in _CELL_SIDES[side]]
                for corner in range(4)
                if not inside[corner]
            ]
        else:
            pairs = [crossed] if crossed else []
        some_inside_corner = np.asarray(_CELL_CORNERS[inside.index(True)]) if any(inside) else 0
        for slot, (entry, exit_) in enumerate(pairs):
            start, end = _DOUBLED_SIDE_MIDPOINTS[entry], _DOUBLED_SIDE_MIDPOINTS[exit_]
            direction, to_inside = end - start, 2 * some_inside_corner - start
            if direction[0] * to_inside[1] - direction[1] * to_inside[0] > 0:
                entry, exit_ = exit_, entry  # the mask was on the left
            table[case, slot] = entry, exit_
    return table


# A 2x2 cell: corners as (row, col) offsets, sides as pairs of corners, and side midpoints.
_CELL_CORNERS = ((0, 0), (0, 1), (1, 1), (1, 0))  # top-left, top-right, bottom-right, bottom-left
_CELL_SIDES = ((0, 1), (1, 2), (3, 2), (0, 3))  # top, right, bottom, left
_DOUBLED_SIDE_MIDPOINTS = np.array(
    [np.add(_CELL_CORNERS[a], _CELL_CORNERS[b]) for a, b in _CELL_SIDES]
)
_SEGMENT_SIDES = _segment_sides()


def _signed_area(contour):
    rows, cols = contour[:, 0], contour[:, 1]
    return 0.5 * float(np.dot(rows, np.roll(cols, 1)) - np.dot(cols, np.roll(rows, 1)))


def _splice_hole(outline, hole):
    """Walk from the outline's point nearest to the hole around the hole and back."""
    distances = ((outline[:, None, :] - hole[None, :, :]) ** 2).sum(axis=2)
    outer_index, hole_index = np.unravel_index(np.argmin(distances), distances.shape)
    hole_loop = np.concatenate([hole[hole_index:], hole[: hole_index + 1]])
    return np.concatenate([outline[: outer_index + 1], hole_loop, outline[outer_index:]])
