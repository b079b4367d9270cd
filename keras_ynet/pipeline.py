"""tf.data input pipeline: records -> batches of (images, {"label", "mask"}).

Design: every image and mask is decoded once with :mod:`keras_ynet.dataset` (Pillow),
resized and channel-converted in numpy, held in memory as uint8 and sliced with
``from_tensor_slices``. The datasets are small (rimone_dl: 485 images, about 95 MB at
256 px), so on a 2-core CPU this beats decoding PNGs with ``tf.io`` every epoch, and the
same numpy preprocessing (:func:`prepare_image`) serves code that has no TensorFlow
(indexing, the device runtime). Only augmentation runs inside tf.data.

Conventions:
* images: float32 pixel values in [0, 255], shape (B, S, S, C); the model rescales them;
* labels: int32 (B,) indices into ``DatasetSpec.class_names``;
* masks: int32 (B, S, S) indices into ``DatasetSpec.mask_class_names``; a row without a
  mask gives :data:`~keras_ynet.dataset.MISSING_MASK` everywhere (left out of the loss);
* images resize bilinear (antialiased when shrinking), masks nearest-neighbour only
  (interpolating labels would invent classes at boundaries);
* grey -> RGB replicates the channel; RGB -> grey is ITU-R BT.601 luma.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from deploy.preprocess import prepare_image
from keras_ynet.dataset import MISSING_MASK, DatasetSpec, Record, load_image, load_mask

MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
BRIGHTNESS = 0.1  # additive, as a fraction of 255
CONTRAST = 0.1  # multiplicative around the image mean


def resize_mask(mask: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (H, W) labels -> (image_size, image_size), nearest-neighbour."""
    if mask.shape == (image_size, image_size):
        return mask
    return np.asarray(Image.fromarray(mask).resize((image_size, image_size), Image.NEAREST))


def load_arrays(
    records: list[Record], image_size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes and prepares records: uint8 images (N, S, S, C) and masks (N, S, S).

    A record without a mask gets a mask of :data:`~keras_ynet.dataset.MISSING_MASK`.
    Each file is decoded and resized once per process and size (:func:`_prepared`):
    training, checkpoint scoring, threshold fitting and evaluation all read the same
    images, so they share the work.
    """
    images = np.empty((len(records), image_size, image_size, channels), np.uint8)
    masks = np.empty((len(records), image_size, image_size), np.uint8)
    for i, r in enumerate(records):
        images[i] = _prepared(*_file_key(r.image), image_size, channels)
        if r.mask is None:
            masks[i] = MISSING_MASK
        else:
            masks[i] = _prepared_mask(*_file_key(r.mask), r.mask_map, image_size)
    return images, masks


def _file_key(path) -> tuple[str, int, int]:
    """(path, size, mtime): a file edited while the process runs is decoded again."""
    stat = Path(path).stat()
    return str(path), stat.st_size, stat.st_mtime_ns


# A few thousand prepared images: all of a dataset of this project's size at 256 px is
# under 0.5 GB; a larger one is decoded again past the limit, never held whole.
CACHED_FILES = 2048


@functools.lru_cache(maxsize=CACHED_FILES)
def _prepared(path: str, _size: int, _mtime: int, image_size: int, channels: int):
    image = prepare_image(load_image(path), image_size, channels)
    image.flags.writeable = False  # shared between callers
    return image


@functools.lru_cache(maxsize=CACHED_FILES)
def _prepared_mask(path: str, _size: int, _mtime: int, mask_map, image_size: int):
    mask = resize_mask(load_mask(path, mask_map), image_size)
    mask.flags.writeable = False
    return mask


def _seed_pair(seed) -> tf.Tensor:
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed


def augment_pair(
    image,
    mask,
    seed,
    *,
    flip: bool = True,
    mirror_classes=None,
    max_rotation_deg: float = MAX_ROTATION_DEG,
    scale_range: tuple[float, float] = SCALE_RANGE,
    brightness: float = BRIGHTNESS,
    contrast: float = CONTRAST,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random flip, rotation and scale applied identically to an image and its mask,
    then brightness/contrast jitter on the image only.

    The mask is resampled nearest-neighbour, so it keeps its label set; out-of-frame
    pixels are filled by reflection in both, so they stay aligned there too.

    Args:
        image: (H, W, C) pixel values in [0, 255], any numeric dtype.
        mask: (H, W) integer labels.
        seed: int or shape-(2,) integer tensor; the same seed gives the same result.
        flip: allow a random horizontal flip (:func:`mirror_pair`).
        mirror_classes: mask class index -> its class in the mirrored image
            (:attr:`keras_ynet.dataset.DatasetSpec.mirror_mask_classes`); None keeps
            every class.
        max_rotation_deg: rotation drawn from [-max, max] degrees.
        scale_range: zoom factor range (> 1 enlarges the content).
        brightness: additive shift drawn from [-b, b] * 255.
        contrast: factor drawn from [1 - c, 1 + c], around the image mean.

    Returns:
        float32 image (H, W, C) clipped to [0, 255], int32 mask (H, W).
    """
    image = tf.cast(image, tf.float32)
    mask = tf.cast(mask, tf.int32)
    s_flip, s_rot, s_scale, s_bright, s_contrast = tf.unstack(
        tf.random.experimental.stateless_split(_seed_pair(seed), num=5)
    )
    if flip:
        image, mask = mirror_pair(image, mask, s_flip, mirror_classes)

    limit = np.deg2rad(max_rotation_deg)
    angle = tf.random.stateless_uniform([], s_rot, -limit, limit)
    scale = tf.random.stateless_uniform([], s_scale, scale_range[0], scale_range[1])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    cx, cy = (tf.cast(w, tf.float32) - 1) / 2, (tf.cast(h, tf.float32) - 1) / 2
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # Maps each output pixel (x, y) to the input point it samples, about the centre.
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )[None]

    def warp(x, interpolation):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x[None], transforms=transform, output_shape=tf.stack([h, w]),
            fill_value=0.0, interpolation=interpolation, fill_mode="REFLECT",
        )[0]  # fmt: skip

    image = warp(image, "BILINEAR")
    mask = tf.cast(warp(tf.cast(mask[..., None], tf.float32), "NEAREST")[..., 0], tf.int32)

    if contrast:
        factor = tf.random.stateless_uniform([], s_contrast, 1 - contrast, 1 + contrast)
        mean = tf.reduce_mean(image)
        image = (image - mean) * factor + mean
    if brightness:
        image += 255.0 * tf.random.stateless_uniform([], s_bright, -brightness, brightness)
    return tf.clip_by_value(image, 0.0, 255.0), mask


def mirror_pair(image, mask, seed, mirror_classes=None) -> tuple[tf.Tensor, tf.Tensor]:
    """A random horizontal flip (probability 1/2) of an image and its mask; a flipped
    mask's classes are mapped through ``mirror_classes`` (class index -> its mirror
    image's class, :attr:`keras_ynet.dataset.DatasetSpec.mirror_mask_classes`), so a
    mirrored right lung is labelled left lung. None keeps every class."""
    image = tf.cast(image, tf.float32)
    mask = tf.cast(mask, tf.int32)
    do_flip = tf.random.stateless_uniform([], _seed_pair(seed)) < 0.5
    # Values past the classes (MISSING_MASK of a row without a mask) map to themselves.
    mirror_classes = list(mirror_classes or [])
    table = mirror_classes + list(range(len(mirror_classes), MISSING_MASK + 1))
    mirrored_mask = tf.gather(tf.constant(table, tf.int32), tf.reverse(mask, [1]))
    image = tf.where(do_flip, tf.reverse(image, [1]), image)
    return image, tf.where(do_flip, mirrored_mask, mask)


def balanced_stream(images, labels, masks, seed: int) -> tf.data.Dataset:
    """An endless stream of ``(image, label, mask)`` that takes the classes in turn,
    each from its own stream reshuffled on every pass over that class, so a batch of B
    holds B // C or B // C + 1 images of each of the C classes (the P x K batches that
    metric-learning losses such as circle loss are usually trained with). A class with
    fewer images is passed over more often than a large one."""
    streams = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        streams.append(
            tf.data.Dataset.from_tensor_slices((images[idx], labels[idx], masks[idx]))
            .shuffle(len(idx), seed=seed + int(c), reshuffle_each_iteration=True)
            .repeat()
        )
    turns = tf.data.Dataset.range(len(streams)).repeat()
    return tf.data.Dataset.choose_from_datasets(streams, turns)


def make_dataset(
    spec: DatasetSpec,
    records: list[Record],
    image_size: int,
    channels: int,
    batch_size: int,
    augment: bool,
    shuffle: bool,
    seed: int,
    repeat: bool = False,
    drop_remainder: bool = False,
    mirror: bool = False,
    balanced: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(images, {"label": labels, "mask": masks})`` from ``records``.

    Args:
        spec: the dataset the records come from (class names, mask kind).
        records: e.g. ``spec.split("train")``; without shuffling, batches keep their order.
        image_size: side of the square images and masks fed to the model.
        channels: 1 or 3; images are converted to it.
        batch_size: images per batch.
        augment: apply :func:`augment_pair` (new random draws every epoch); its flips
            swap side-specific mask classes as ``mirror`` does, and are left out where
            a sided class has no partner (no mirror of such a mask is valid).
        shuffle: reshuffle the records every epoch.
        seed: seeds shuffling and augmentation; the same seed gives the same batches.
        repeat: repeat forever (for ``steps_per_epoch``).
        drop_remainder: drop the last partial batch.
        mirror: random horizontal flips alone, when ``augment`` is off
            (:func:`mirror_pair`; side-specific mask classes swap).
        balanced: with ``shuffle``, every batch holds the classes in equal shares
            (:func:`balanced_stream`); an epoch still has ``len(records)`` images.

    Raises:
        ValueError: ``mirror`` on a dataset whose masks have a sided class without a
            partner (no mirror of such a mask is valid).
    """
    if not records:
        raise ValueError("make_dataset got no records")
    images, masks = load_arrays(records, image_size, channels)
    labels = spec.label_ids(records)
    if balanced and not shuffle:
        raise ValueError("balanced batches are drawn at random: they need shuffle")
    if balanced:
        ds = balanced_stream(images, labels, masks, seed).take(len(records))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, labels, masks))
        if shuffle:
            ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # One rule for every flip: side-specific mask classes swap (right lung <-> left lung).
    mirror_classes = spec.mirror_mask_classes
    if mirror and not augment:
        if mirror_classes is None:
            raise ValueError(
                f"{spec.root}: flips need a mirror of every mask class, and "
                f"{spec.mask_class_names} name a side without its other side"
            )
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def apply_mirror(example, pair_seed):
            image, label, mask = example
            image, mask = mirror_pair(image, mask, pair_seed, mirror_classes)
            return image, {"label": label, "mask": mask}

        ds = tf.data.Dataset.zip(ds, seeds).map(
            apply_mirror, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    elif augment:
        use_flip = mirror_classes is not None
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def apply(example, pair_seed):
            image, label, mask = example
            image, mask = augment_pair(
                image, mask, pair_seed, flip=use_flip, mirror_classes=mirror_classes
            )
            return image, {"label": label, "mask": mask}

        ds = tf.data.Dataset.zip(ds, seeds).map(
            apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        ds = ds.map(
            lambda image, label, mask: (
                tf.cast(image, tf.float32),
                {"label": label, "mask": tf.cast(mask, tf.int32)},
            )
        )
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
