"""Deterministic generator of the built-in COCO-format instance dataset ("MKD digits").

Every image is a crop of one of the photographs shipped inside scikit-image (often out of focus,
its contrast flattened), with 1-6 of the 8x8 handwritten digits shipped inside scikit-learn
pasted on top (smoothly upsampled, recoloured, rotated, partly occluding each other) plus up to
three unlabelled distractors. Version 1 (denser, more occluded, camouflaged) was too hard to learn
in a few hundred iterations from scratch on the CPU: both RetinaNets stayed below 2 AP. Nothing
is downloaded, so the dataset can be rebuilt anywhere from its seed (byte for byte with the same
numpy / Pillow / scikit versions).
"""
import functools
import importlib
import json
import multiprocessing
import os
from collections import defaultdict, namedtuple
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mkd.engine.datasets import check_writable

# scipy, scikit-learn and scikit-image (the `builtin` extra) are imported where an image is
# generated (`optional_import`), not here: registering the datasets and training on generated
# ones needs none of them.

SPLITS = ("train", "val")
CATEGORY_NAMES = [str(digit) for digit in range(10)]
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VAL = 200
DEFAULT_IMAGE_SIZE = 256
MIN_IMAGE_SIZE = 64
MAX_OBJECTS_PER_IMAGE = 6
MAX_CLUTTER_PER_IMAGE = 3
MIN_VISIBLE_FRACTION = 0.6
JPEG_QUALITY = 90
# Bumped whenever the rendering changes: a split on disk written by another version is stale
# and regenerated, and cached runs trained on it are not reused.
GENERATOR_VERSION = 2

# (probability, min, max) mask area in pixels at image_size 256 for COCO's small / medium / large
# buckets. An object draws a bucket, then a log-uniform area inside it. Large objects are drawn
# more often because they fail placement and lose area to occluders more often; this way each
# bucket ends up with roughly a third of the annotated instances.
_SIZE_BUCKETS_AT_256 = ((0.3, 200.0, 32.0**2), (0.3, 32.0**2, 96.0**2), (0.4, 1.3 * 96.0**2, 2e4))
# Placement keeps every instance below this visible, leaving margin above MIN_VISIBLE_FRACTION.
_PLACEMENT_VISIBLE_FRACTION = 0.8
_PLACEMENT_TRIES = 8
# Share of scikit-learn's 1797 digits (13 writers, stored roughly writer by writer) used for
# training; val takes the rest so it is scored on handwriting the model has not seen.
_TRAIN_DIGIT_FRACTION = 0.8
# Photographs that load from scikit-image's wheel without pooch; "text", "page" and "clock"
# are left out because their glyphs would be unlabelled digit look-alikes.
_PHOTO_LOADERS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "cell",
)


# One pasted thing: soft matte, binary mask (same shape), category id (0: unlabelled clutter) and
# whether it is filled with a photo crop instead of a colour.
_Layer = namedtuple("_Layer", ["alpha", "mask", "category_id", "photo_fill"])


def coco_categories():
    """COCO category records; ids start at 1 as in COCO, names are the digits."""
    return [
        {"id": index + 1, "name": name, "supercategory": "digit"}
        for index, name in enumerate(CATEGORY_NAMES)
    ]


def split_paths(root, split):
    """Return (json_file, image_root) of a split, the layout Detectron2's COCO loader expects."""
    json_file = os.path.join(root, "annotations", f"instances_{split}.json")
    return json_file, os.path.join(root, split)


def generate_split(root, split, num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0, workers=None):
    """Write `root/<split>/*.jpg` and `root/annotations/instances_<split>.json`; return the json.

    Each image has its own random stream keyed by (seed, split, index), so the output does not
    depend on `workers` (default: one process per CPU core). The json is written last and
    atomically: its presence means the split is complete.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: split must be one of {SPLITS}")
    _check_count("num_images", num_images)
    _check_image_size(image_size)
    check_writable(root)
    # Load the sources before forking so that worker processes inherit them.
    _digit_pool(split)
    _photos()
    render = functools.partial(_render_digits_image, split, image_size, seed)
    info = {"description": "MKD digits: scikit-learn digits on scikit-image photographs",
            "version": GENERATOR_VERSION}
    return write_coco_split(root, split, num_images, image_size, seed, workers, render, info,
                            coco_categories())


def write_coco_split(root, split, num_images, image_size, seed, workers, render, info,
                     categories):
    """Render `num_images` images with `render(index) -> (pixels, instances)`, in `workers`
    processes, and write them as a COCO split; return the json file (written last and
    atomically: its presence means the split is complete).

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
    _write_json_atomically(dataset, json_file)
    return json_file


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


def generate_splits(generate_split, root, seed, num_train, num_val, image_size, workers):
    """Both splits of a built-in dataset with its ``generate_split``, arguments checked first."""
    _check_count("num_train", num_train)
    _check_count("num_val", num_val)
    _check_image_size(image_size)
    check_writable(root)
    return {
        split: generate_split(root, split, count, image_size, seed, workers)
        for split, count in (("train", num_train), ("val", num_val))
    }


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


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_image_size(image_size):
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < MIN_IMAGE_SIZE
    ):
        raise ValueError(
            f"image_size must be an integer >= {MIN_IMAGE_SIZE} (objects and clutter need room), "
            f"got {image_size!r}"
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


def _render_digits_image(split, image_size, seed, index):
    """Image `index` of a split, from its own random stream keyed by (seed, split, index)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    return _render_image(rng, image_size, *_digit_pool(split))


def _write_json_atomically(data, path):
    """Write via a temp file + rename so an interrupted run never leaves a half json behind."""
    tmp_path = f"{path}.tmp{os.getpid()}"
    with open(tmp_path, "w") as f:
        f.write(json.dumps(data, separators=(",", ":")))  # dumps uses the C encoder, dump not
    os.replace(tmp_path, path)


@functools.lru_cache(maxsize=None)
def _photos():
    """Background photographs as RGB PIL images, loaded once per process."""
    skimage_data = optional_import("skimage.data")
    photos = []
    for loader in _PHOTO_LOADERS:
        photo = np.asarray(getattr(skimage_data, loader)())
        if photo.ndim == 2:
            photo = np.repeat(photo[:, :, None], 3, axis=2)
        photos.append(Image.fromarray(np.ascontiguousarray(photo[:, :, :3])))
    return tuple(photos)


@functools.lru_cache(maxsize=None)
def _digit_pool(split):
    """8x8 digits scaled to [0, 1] and their labels; train and val use disjoint samples."""
    digits = optional_import("sklearn.datasets").load_digits()
    boundary = int(len(digits.target) * _TRAIN_DIGIT_FRACTION)
    selection = slice(0, boundary) if split == "train" else slice(boundary, None)
    return digits.images[selection].astype(np.float32) / 16.0, digits.target[selection]


def _photo_crop(rng, height, width):
    """A random crop of a random photograph, rescaled to (height, width)."""
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    scale = rng.uniform(0.25, 1.0)
    crop_w = max(8, min(photo.width, int(photo.width * scale * rng.uniform(0.8, 1.25))))
    crop_h = max(8, min(photo.height, int(photo.height * scale * rng.uniform(0.8, 1.25))))
    left = int(rng.integers(photo.width - crop_w + 1))
    top = int(rng.integers(photo.height - crop_h + 1))
    box = (left, top, left + crop_w, top + crop_h)
    crop = np.asarray(photo.resize((width, height), Image.BILINEAR, box=box), dtype=np.float32)
    crop = crop / 255.0
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _background(rng, size):
    """Photo crop with colour jitter, sometimes grey or blended with a second photo."""
    image = _photo_crop(rng, size, size)
    if rng.random() < 0.3:
        image = 0.5 * (image + _photo_crop(rng, size, size))
    if rng.random() < 0.2:
        image = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.7:  # out of focus, as behind a subject
        blurred = Image.fromarray((image * 255).astype(np.uint8))
        blurred = blurred.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 4.0) * size / 256))
        image = np.asarray(blurred, dtype=np.float32) / 255.0
    # Flatten the photo's contrast so it textures the scene without hiding the digits.
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = mean + (image - mean) * np.float32(rng.uniform(0.3, 0.7))
    gain = (rng.uniform(0.6, 1.3, size=3) * rng.uniform(0.7, 1.2)).astype(np.float32)
    offset = np.float32(rng.uniform(-0.15, 0.15))
    return np.clip(image * gain + offset, 0.0, 1.0)


def _foreground(rng, height, width, backdrop, mask):
    """Colour for a layer (solid or photo-textured) that differs in luminance from what it
    covers by a random margin, so objects are visible but contrast itself is not a giveaway."""
    backdrop_luma = float(backdrop[mask].mean())
    min_contrast = rng.uniform(0.3, 0.5)
    for _ in range(10):
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        if abs(float(colour.mean()) - backdrop_luma) >= min_contrast:
            break
    else:
        colour = np.full(3, 0.0 if backdrop_luma > 0.5 else 1.0, dtype=np.float32)
    if rng.random() < 0.3:
        texture = _photo_crop(rng, height, width).mean(axis=2, keepdims=True)
        return colour * (0.6 + 0.8 * texture)
    return np.broadcast_to(colour, (height, width, 3))


def _digit_matte(digit, height, width, angle, threshold):
    """Bicubic upsampling of an 8x8 digit: (soft matte, mask at `threshold`), or None."""
    padded = np.pad(digit, 1)  # a zero border lets strokes fade out instead of being cut off
    size = (max(2, round(width * 10 / 8)), max(2, round(height * 10 / 8)))
    matte = Image.fromarray(padded, mode="F").resize(size, Image.BICUBIC)
    matte = np.asarray(matte.rotate(angle, resample=Image.BILINEAR, expand=True))
    alpha = np.clip((matte - threshold) / 0.2 + 0.5, 0.0, 1.0)
    return _trim(alpha, matte >= threshold)


def _trim(alpha, mask):
    """Crop a matte to its mask's bounding box; None if the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.ascontiguousarray(alpha[crop]), np.ascontiguousarray(mask[crop])


def _digit_layer(rng, digit, category_id, image_size):
    """A digit whose mask area is log-uniform inside a randomly drawn COCO size bucket."""
    probabilities, lows, highs = zip(*_SIZE_BUCKETS_AT_256)
    bucket = rng.choice(len(probabilities), p=probabilities)
    target_area = np.exp(rng.uniform(np.log(lows[bucket]), np.log(highs[bucket])))
    target_area *= (image_size / 256.0) ** 2
    aspect = rng.uniform(0.65, 1.0)
    angle = rng.uniform(-20.0, 20.0)
    threshold = rng.uniform(0.45, 0.65)
    reference = _digit_matte(digit, 40, 40 * aspect, angle, threshold)
    if reference is None:
        return None
    height = float(np.clip(40 * np.sqrt(target_area / reference[1].sum()), 6, 0.9 * image_size))
    matte = _digit_matte(digit, height, height * aspect, angle, threshold)
    return None if matte is None else _Layer(*matte, category_id=category_id, photo_fill=False)


def _clutter_layer(rng, image_size):
    """Unlabelled distractor: digit-like strokes or arcs, a blob, or a patch of another photo."""
    side = int(np.exp(rng.uniform(np.log(10), np.log(0.3 * image_size))))
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    kind = rng.integers(4)
    width = max(1, int(side * rng.uniform(0.05, 0.15)))
    if kind == 0:
        for _ in range(rng.integers(1, 4)):
            points = [tuple(point) for point in rng.uniform(0, side, size=(rng.integers(2, 5), 2))]
            draw.line(points, fill=255, width=width, joint="curve")
    elif kind == 1:
        start = rng.uniform(0, 360)
        draw.arc((0, 0, side - 1, side - 1), start, start + rng.uniform(90, 300), 255, width)
    elif kind == 2:
        points = [tuple(point) for point in rng.uniform(0, side, size=(rng.integers(3, 7), 2))]
        draw.polygon(points, fill=255)
    else:
        draw.rectangle((0, 0, side - 1, side - 1), fill=255)
    alpha = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0
    matte = _trim(alpha, alpha >= 0.5)
    return None if matte is None else _Layer(*matte, category_id=0, photo_fill=kind == 3)


def _place(rng, mask, label_map, full_areas, visible_areas):
    """Pick a position where `mask` leaves every instance below it well visible; None if no
    position among a few tries does."""
    image_size = label_map.shape[0]
    height, width = mask.shape
    if height > image_size or width > image_size:
        return None
    for _ in range(_PLACEMENT_TRIES):
        top = int(rng.integers(image_size - height + 1))
        left = int(rng.integers(image_size - width + 1))
        covered = label_map[top : top + height, left : left + width][mask]
        lost = np.bincount(covered, minlength=len(full_areas) + 1)[1:]
        remaining = np.asarray(visible_areas) - lost
        if np.all(remaining >= _PLACEMENT_VISIBLE_FRACTION * np.asarray(full_areas)):
            return top, left
    return None


def _render_image(rng, image_size, digits, labels):
    """Compose one image; returns (uint8 pixels, [(category_id, bbox, polygons, area)])."""
    image = _background(rng, image_size)
    layers = []
    for _ in range(rng.integers(1, MAX_OBJECTS_PER_IMAGE + 1)):
        sample = int(rng.integers(len(labels)))
        layers.append(_digit_layer(rng, digits[sample], int(labels[sample]) + 1, image_size))
    layers += [
        _clutter_layer(rng, image_size)
        for _ in range(rng.integers(0, MAX_CLUTTER_PER_IMAGE + 1))
    ]
    layers = [layer for layer in layers if layer is not None]
    # Stack roughly from large to small, as in cluttered photos: big things mostly sit behind,
    # but the jitter lets some of them occlude smaller ones.
    depth = [np.log(layer.mask.sum()) + rng.normal(0.0, 1.0) for layer in layers]
    layers = [layers[index] for index in np.argsort(depth)[::-1]]

    # label_map holds, per pixel, 1 + the index of the instance visible there (0: none).
    label_map = np.zeros((image_size, image_size), dtype=np.int32)
    categories, full_areas, visible_areas = [], [], []
    for layer in layers:
        position = _place(rng, layer.mask, label_map, full_areas, visible_areas)
        if position is None:
            continue
        top, left = position
        window = (slice(top, top + layer.mask.shape[0]), slice(left, left + layer.mask.shape[1]))
        backdrop = image[window]
        if layer.photo_fill:
            colour = _photo_crop(rng, *layer.mask.shape)
        else:
            colour = _foreground(rng, *layer.mask.shape, backdrop, layer.mask)
        blend = (layer.alpha * np.float32(rng.uniform(0.75, 1.0)))[:, :, None]
        image[window] = backdrop * (1.0 - blend) + colour * blend

        covered = label_map[window]
        lost = np.bincount(covered[layer.mask], minlength=len(full_areas) + 1)[1:]
        visible_areas = [visible - gone for visible, gone in zip(visible_areas, lost)]
        if layer.category_id:
            categories.append(layer.category_id)
            full_areas.append(int(layer.mask.sum()))
            visible_areas.append(full_areas[-1])
            covered[layer.mask] = len(categories)
        else:
            covered[layer.mask] = 0

    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        blur = ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0))
        pixels = np.asarray(Image.fromarray(pixels).filter(blur))
    # Luminance noise: one plane shared by the channels costs a third of per-channel noise.
    noise = rng.standard_normal((image_size, image_size, 1), dtype=np.float32)
    noise *= np.float32(rng.uniform(0.0, 8.0))
    pixels = np.clip(pixels + noise + 0.5, 0, 255).astype(np.uint8)
    return pixels, _annotations(label_map, categories, full_areas, visible_areas)


def _annotations(label_map, categories, full_areas, visible_areas):
    """Instances that stay at least MIN_VISIBLE_FRACTION visible, described by their visible
    part: tight bbox (xywh), polygons and area (pixel count, which the polygons reproduce)."""
    ndimage = optional_import("scipy.ndimage")
    instances = []
    for index, box in enumerate(ndimage.find_objects(label_map, max_label=len(categories))):
        if box is None or visible_areas[index] < MIN_VISIBLE_FRACTION * full_areas[index]:
            continue
        visible = label_map[box] == index + 1
        top, left = box[0].start, box[1].start
        bbox = [left, top, visible.shape[1], visible.shape[0]]
        polygons = mask_to_polygons(visible, origin=(left, top))
        instances.append((categories[index], bbox, polygons, float(visible.sum())))
    return instances


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
