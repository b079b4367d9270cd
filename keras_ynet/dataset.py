"""Reading and validating a dataset folder (numpy + Pillow only, no TensorFlow).

A dataset is a folder holding ``labels.csv`` and the image/mask files it names::

    id,image,mask,label,split[,extra columns...]
    r1_Im001,images/r1_Im001.png,masks/r1_Im001.png,normal,train,...

``image`` and ``mask`` are paths relative to the folder (``mask`` may be empty), ``split``
is one of ``train``, ``val``, ``test``, and extra columns are kept as strings. An optional
``dataset.json`` declares ``{"name": ..., "mask_classes": [...], "mask_kind": ..., "licence": ...}``.
Masks are uint8 label images: pixel value = index into ``mask_classes``, unless
dataset.json maps stored values to classes (``mask_values``) or the masks hold exactly
the values {0, 255} (the binary form of most public segmentation sets), which read as
background / foreground (:mod:`keras_ynet.masks`). A row may have no mask: it trains on
the other losses.

:func:`load_dataset` checks everything up front and raises one :class:`DatasetError`
listing every problem found (row, id, file), so a broken folder is fixed in one pass;
its ``summary`` is the one-line form the command lines print
(:func:`deploy.errors.error_line`). Parsing labels.csv and dataset.json, and the row and
split checks, live in :mod:`keras_ynet.dataset_csv`; this module checks the files the
rows name and builds the :class:`DatasetSpec`. (About 340 lines: :func:`load_dataset`
checks every row and file in one pass so a broken folder is fixed at once; it is kept
whole rather than split across modules.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from deploy import dicom, preprocess
from deploy.sources import ALLOW_OUTSIDE_KEY
from keras_ynet.dataset_csv import (
    SPLITS,
    DatasetError,
    Record,
    read_dataset_json,
    read_rows,
    split_problems,
)
from keras_ynet.masks import (
    BINARY_MASK_CLASSES,
    BINARY_MASK_VALUES,
    MISSING_MASK,
    declared_mask_map,
    load_mask,
    mapped_class_names,
)

__all__ = [
    "CHEST_MASK_CLASSES",
    "FUNDUS_MASK_CLASSES",
    "REQUIRED_SPLITS",
    "DatasetError",
    "DatasetSpec",
    "Record",
    "load_dataset",
    "load_image",
    "load_mask",
    "MISSING_MASK",
    "validation_fold",
]

# Layouts of the project's two real datasets, used when a folder has no dataset.json.
FUNDUS_MASK_CLASSES = ("background", "disc", "cup")
CHEST_MASK_CLASSES = ("background", "right_lung", "left_lung", "heart")
# Splits every consumer reads: train is the database, test the queries (and parity images).
REQUIRED_SPLITS = ("train", "test")


@dataclass
class DatasetSpec:
    """A validated dataset folder.

    Attributes:
        root: the dataset folder.
        name: ``dataset.json`` name, else the folder name.
        records: all rows of labels.csv, in file order.
        class_names: sorted unique labels; label ids index into this list.
        mask_class_names: names of the mask values 0..K-1 (empty when there are no masks).
        channels: 1 (grey) or 3 (colour), from the first image.
        image_size: (height, width) of the first image.
        mask_kind: ``fundus``, ``chest``, ``lesion``, ... or ``generic`` when unknown.
        mask_map: (stored value, class index) pairs when the mask files store other
            values than class indices; empty when they store the indices.
        licence: ``dataset.json`` ``licence`` (the data's licence or terms of use, as
            a note for the model card), else None.
    """

    root: Path
    name: str
    records: list[Record]
    class_names: list[str]
    mask_class_names: list[str]
    channels: int
    image_size: tuple[int, int]
    mask_kind: str = "generic"
    mask_map: tuple[tuple[int, int], ...] = ()
    licence: str | None = None

    def split(self, name: str) -> list[Record]:
        """Records of one split (``train``, ``val`` or ``test``), in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [r for r in self.records if r.split == name]

    def label_ids(self, records: list[Record]) -> np.ndarray:
        """int32 class ids (indices into ``class_names``) of ``records``."""
        index = {name: i for i, name in enumerate(self.class_names)}
        try:
            return np.array([index[r.label] for r in records], dtype=np.int32)
        except KeyError as e:
            raise ValueError(f"label {e.args[0]!r} is not one of {self.class_names}") from None

    def extra_column(self, records: list[Record], col: str, dtype=None) -> list[str] | np.ndarray:
        """Values of an extra labels.csv column; strings, or an array when ``dtype`` is given."""
        missing = [r.id for r in records if col not in r.extra]
        if missing:
            cols = sorted(records[0].extra) if records else []
            raise KeyError(
                f"column {col!r} not in {self.root / 'labels.csv'} (extra columns: {cols})"
            )
        values = [r.extra[col] for r in records]
        return values if dtype is None else np.asarray(values, dtype=dtype)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_mask_classes(self) -> int:
        return len(self.mask_class_names)

    @property
    def mirror_mask_classes(self) -> list[int] | None:
        """Mask class index -> the class a horizontal mirror turns it into: a class
        naming a side swaps with the class of the same name and the other side
        (``right_lung`` <-> ``left_lung``), every other class stays. None when a sided
        class has no partner, so no mirror of the mask is valid."""
        names = self.mask_class_names
        index = {n: i for i, n in enumerate(names)}
        mirror = []
        for name in names:
            if "left" in name or "right" in name:
                other = name.replace("left", "\0").replace("right", "left").replace("\0", "right")
                if other not in index:
                    return None
                mirror.append(index[other])
            else:
                mirror.append(index[name])
        return mirror


def _open(path: Path, what: str) -> Image.Image:
    try:
        return preprocess.open_image(path, what)
    except preprocess.ImageError as e:
        raise DatasetError(str(e)) from None


def _header(path: Path, what: str, verify: bool = False) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) from the file header; ``verify`` checks PNG chunk CRCs."""
    if not _is_file(path):
        raise DatasetError(f"{what} file not found: {path}")
    if what == "image" and dicom.is_dicom(path):  # decoded in full: DICOM has no Pillow header
        image = load_image(path)
        return ("L" if image.shape[-1] == 1 else "RGB"), image.shape[:2]
    try:
        with Image.open(path) as img:
            mode, size = img.mode, (img.height, img.width)
            if verify:
                img.verify()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors
        raise DatasetError(f"cannot read {what} {path}: {e}") from e
    return mode, size


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def load_image(path: str | Path) -> np.ndarray:
    """Reads an image as uint8 (H, W, 1 or 3); see :mod:`deploy.preprocess` for the rules.

    Raises:
        DatasetError: naming the file, when it is missing, truncated or not an image.
    """
    try:
        return preprocess.load_image(path)
    except preprocess.ImageError as e:
        raise DatasetError(str(e)) from None


def _infer_layout(root: Path, labels: set[str], max_value: int) -> tuple[list[str], str]:
    name = root.name.lower()
    if "rimone" in name or (labels and labels <= {"glaucoma", "normal"}):
        return list(FUNDUS_MASK_CLASSES), "fundus"
    if "jsrt" in name:
        return list(CHEST_MASK_CLASSES), "chest"
    return [f"class_{i}" for i in range(max_value + 1)], "generic"


def load_dataset(
    root: str | Path,
    check_files: bool = True,
    scan_masks: bool = True,
    required_splits: tuple[str, ...] = REQUIRED_SPLITS,
) -> DatasetSpec:
    """Reads and validates a dataset folder.

    Args:
        root: folder holding labels.csv (and optionally dataset.json).
        check_files: check that every image and mask exists and is a readable image
            (PNG chunks and CRCs are verified without decoding pixels), and that each mask
            has its image's size.
        scan_masks: decode every mask and check its values lie within the mask classes.
            Without dataset.json and outside the known layouts (folder name containing
            ``rimone`` or glaucoma/normal labels -> background/disc/cup; ``jsrt`` ->
            background/right_lung/left_lung/heart), the number of mask classes is inferred
            as max value + 1, which needs the scan: masks are then scanned regardless.
        required_splits: splits that must hold rows (default train, the retrieval
            database, and test, the queries). Every label must also have train rows.

    Returns:
        The :class:`DatasetSpec`.

    Raises:
        DatasetError: listing every problem, each naming labels.csv, the row (1-based data
            row and file line) and id, and the file at fault.
    """
    root = Path(root).expanduser()
    csv_path = root / "labels.csv"
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} is a file, not a folder")
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path} not found: a dataset folder needs labels.csv")
    problems: list[str] = []
    meta = read_dataset_json(root, problems)
    rows = read_rows(csv_path, problems, allow_outside=meta.get(ALLOW_OUTSIDE_KEY) is True)
    records = [r for _, r in rows]
    labels = {r.label for r in records if r.label}
    problems.extend(split_problems(rows, required_splits))

    declared = meta.get("mask_classes")
    has_masks = any(r.mask is not None for r in records)
    known, kind = _infer_layout(root, labels, -1)
    fixed = declared if declared is not None else (known if kind != "generic" else None)
    mask_map = declared_mask_map(meta, declared, problems, root / "dataset.json")
    if mask_map:
        fixed = declared if declared is not None else mapped_class_names(meta["mask_values"])
    need_scan = has_masks and (scan_masks or fixed is None)
    image_sizes: dict[str, tuple[int, int]] = {}
    max_value = -1
    seen_values: set[int] = set()
    for where, r in rows:
        try:
            if check_files:
                image_sizes[r.id] = _header(r.image, "image", verify=True)[1]
            if r.mask is not None and need_scan:
                mask = load_mask(r.mask, mask_map)
                if not mask.size:
                    raise DatasetError(f"mask {r.mask} has no pixels")
                shape, max_value = mask.shape, max(max_value, int(mask.max()))
                if fixed is None and len(seen_values) <= len(BINARY_MASK_VALUES):
                    seen_values.update(int(v) for v in np.unique(mask))
                if fixed is not None and mask.max() >= len(fixed):
                    bad = [int(v) for v in np.unique(mask) if v >= len(fixed)]
                    problems.append(
                        f"{where}: mask {r.mask} has values {bad} outside the "
                        f"{len(fixed)} mask classes {list(fixed)}"
                    )
            elif r.mask is not None and check_files:
                shape = _header(r.mask, "mask", verify=True)[1]
            else:
                continue
        except (OSError, ValueError) as e:  # DatasetError, or a path the OS refuses
            problems.append(f"{where}: {e}")
            continue
        size = image_sizes.get(r.id)
        if size is not None and size != tuple(shape):
            problems.append(
                f"{where}: mask {r.mask} is {shape[1]}x{shape[0]} but its image is "
                f"{size[1]}x{size[0]} (width x height)"
            )
    binary = max(BINARY_MASK_VALUES) in seen_values and seen_values <= set(BINARY_MASK_VALUES)
    if fixed is None and binary:
        # Exactly {0, 255} (or only 255): the binary form, read as background/foreground.
        fixed, max_value = list(BINARY_MASK_CLASSES), len(BINARY_MASK_CLASSES) - 1
        mask_map = tuple((v, i) for i, v in enumerate(BINARY_MASK_VALUES))
    if fixed is not None:
        mask_class_names = list(fixed) if has_masks or declared is not None else []
    else:
        mask_class_names = _infer_layout(root, labels, max_value)[0]
        if max_value >= 64:
            problems.append(
                f"masks hold values up to {max_value}: these look like intensities, not "
                "class indices; store labels 0..K-1 or declare mask_classes in dataset.json"
            )
    if problems:
        lines = "\n  ".join(problems)
        raise DatasetError(
            f"invalid dataset {csv_path}: {len(problems)} problem(s):\n  {lines}",
            problems,
            str(csv_path),
        )

    mode, size = _header(records[0].image, "image")
    if mask_map:
        records = [replace(r, mask_map=mask_map) for r in records]
    return DatasetSpec(
        root=root.absolute(),
        name=str(meta.get("name") or root.name),
        records=records,
        class_names=sorted(labels),
        mask_class_names=mask_class_names,
        channels=1 if mode in preprocess.GREY_MODES else 3,
        image_size=size,
        mask_kind=str(meta.get("mask_kind") or kind),
        mask_map=mask_map,
        licence=meta.get("licence"),
    )


def validation_fold(
    records: list[Record], fraction: float = 0.1, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """Cuts a label-stratified validation fold out of train-split records.

    Used to choose checkpoints without touching the test split. Per label,
    ``round(fraction * n)`` records go to validation (at least one when the label has two
    or more records, never all of them). Both lists keep the input order.

    Raises:
        ValueError: if a record is not from the train split, or fraction is not in (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    others = sorted({r.split for r in records} - {"train"})
    if others:
        raise ValueError(f"validation_fold takes train-split records only; got splits {others}")
    rng = np.random.default_rng(seed)
    val_ids: set[str] = set()
    for label in sorted({r.label for r in records}):
        members = [r.id for r in records if r.label == label]
        n_val = int(np.floor(fraction * len(members) + 0.5))
        n_val = min(max(n_val, 1 if len(members) >= 2 else 0), len(members) - 1)
        val_ids.update(members[i] for i in rng.permutation(len(members))[:n_val])
    return [r for r in records if r.id not in val_ids], [r for r in records if r.id in val_ids]
