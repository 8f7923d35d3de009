"""Deterministic generator of the "MKD digits" COCO-format instance dataset: the harder variant.

Every image is a crop of one of the photographs shipped inside scikit-image (often out of focus,
its contrast flattened), with 1-6 of the 8x8 handwritten digits shipped inside scikit-learn
pasted on top (smoothly upsampled, recoloured, rotated, partly occluding each other) plus up to
three unlabelled distractors. Version 1 (denser, more occluded, camouflaged) was too hard to learn
in a few hundred iterations from scratch on the CPU: both RetinaNets stayed below 2 AP. Nothing
is downloaded, so the dataset can be rebuilt anywhere from its seed (byte for byte with the same
numpy / Pillow / scikit versions). coco_writer.py writes the images and the json.
"""
import functools
from collections import namedtuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .coco_writer import (
    SPLITS,
    check_split_arguments,
    coco_categories,
    generate_splits,
    mask_to_polygons,
    optional_import,
    write_coco_split,
)

# scipy, scikit-learn and scikit-image (the `builtin` extra) are imported where an image is
# generated (`optional_import`), not here: registering the datasets and training on generated
# ones needs none of them.

CATEGORY_NAMES = [str(digit) for digit in range(10)]
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VAL = 200
DEFAULT_IMAGE_SIZE = 256
MAX_OBJECTS_PER_IMAGE = 6
MAX_CLUTTER_PER_IMAGE = 3
MIN_VISIBLE_FRACTION = 0.6
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


def generate_split(root, split, num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0, workers=None):
    """Write `root/<split>/*.jpg` and `root/annotations/instances_<split>.json`; return the json.

    Each image has its own random stream keyed by (seed, split, index), so the output does not
    depend on `workers` (default: one process per CPU core). The json is written last and
    atomically: its presence means the split is complete.
    """
    check_split_arguments(root, split, num_images, image_size)
    # Load the sources before forking so that worker processes inherit them.
    _digit_pool(split)
    _photos()
    render = functools.partial(_render_digits_image, split, image_size, seed)
    info = {"description": "MKD digits: scikit-learn digits on scikit-image photographs",
            "version": GENERATOR_VERSION}
    return write_coco_split(root, split, num_images, image_size, seed, workers, render, info,
                            coco_categories(CATEGORY_NAMES, "digit"))


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


def _render_digits_image(split, image_size, seed, index):
    """Image `index` of a split, from its own random stream keyed by (seed, split, index)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    return _render_image(rng, image_size, *_digit_pool(split))


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


