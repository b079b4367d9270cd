"""What to index or query: dataset rows, a folder of images, or image files.

Each source becomes a list of :class:`Item` (id, path, metadata). Reading a dataset here
needs only the standard library: the device cannot import ``keras_ynet.dataset``, and
indexing needs only three columns of ``labels.csv`` (``id``, ``image``, ``label``) plus
``split`` to choose rows. Files are not opened here; the encoder reports bad images.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLIT_CHOICES = ("train", "val", "test", "all")
# Suffixes a folder scan picks up (lower-cased); other files (notes, CSVs) are ignored.
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".dcm", ".dicom",
)  # fmt: skip
_DATASET_COLUMNS = ("id", "image", "label", "split")
# dataset.json key that lets labels.csv name files outside the dataset folder (the
# cross-validation folds of keras_ynet.experiments.cv point at the original dataset).
ALLOW_OUTSIDE_KEY = "allow_outside_paths"


def leaves_root(root: str | Path, path: str | Path) -> bool:
    """Whether ``path``, with every symbolic link and ``..`` resolved, is outside ``root``.

    A dataset or image folder is what the user chose to share with the index, the model
    and the report: a row naming ``/home/me/private.png``, ``../../x.png`` or a link to
    either would pull a file from elsewhere on the machine into all three.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(Path(root) / path)
    return os.path.commonpath([real_root, real]) != real_root


def allows_outside(root: str | Path) -> bool:
    """``"allow_outside_paths": true`` in ``root/dataset.json`` (anything else: no)."""
    try:
        meta = json.loads((Path(root) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get(ALLOW_OUTSIDE_KEY) is True


def outside_error(root: Path, where: str, path: str, flag: str) -> ValueError:
    return ValueError(
        f"{where}: {path!r} is outside {root} (absolute, '..' or a symbolic link leaving "
        f"it); refused unless {flag}"
    )


@dataclass(frozen=True)
class Item:
    """One image to encode.

    Attributes:
        id: the id it gets in the index (unique within a source).
        path: the image file.
        metadata: what the index stores with it: ``path`` (absolute) and ``label``.
        frame: the 0-based frame to encode of a multi-frame file (:mod:`deploy.cine`);
            None for a single-frame file.
    """

    id: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    frame: int | None = None


def dataset_items(
    root: str | Path, split: str = "train", allow_outside: bool = False
) -> list[Item]:
    """Rows of ``root/labels.csv`` in one split (or ``"all"``), in file order.

    Ids are the ``id`` column; metadata holds ``path``, ``label`` and ``split``. An image
    path leaving ``root`` (:func:`leaves_root`) is refused unless ``allow_outside`` or
    the dataset's dataset.json says ``"allow_outside_paths": true``.

    Raises:
        ValueError: for a missing or malformed labels.csv, or an unknown split.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_CHOICES)}")
    root = Path(root).expanduser().absolute()
    csv_path = root / "labels.csv"
    if not root.is_dir():
        raise ValueError(f"dataset folder not found: {root}")
    if not csv_path.is_file():
        raise ValueError(f"{csv_path} not found: --data needs a dataset folder with labels.csv")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{csv_path} is not UTF-8 text: {err}") from err
    except OSError as err:
        raise ValueError(f"cannot read {csv_path}: {err}") from err
    if "\0" in text:
        raise ValueError(f"{csv_path} holds NUL bytes: binary data, not a CSV text file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    allow_outside = allow_outside or allows_outside(root)
    try:
        return _rows(csv_path, root, reader, split, allow_outside)
    except csv.Error as err:  # a field over the csv module's size limit
        raise ValueError(f"{csv_path} line {reader.line_num}: not a readable CSV: {err}") from err


def _rows(
    csv_path: Path, root: Path, reader: csv.DictReader, split: str, allow_outside: bool
) -> list[Item]:
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in _DATASET_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}")
    reader.fieldnames = header
    items, seen = [], set()
    for row in reader:
        cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
        if not any(cells.values()):
            continue  # blank line
        if not cells["id"] or not cells["image"]:
            raise ValueError(f"{csv_path} line {reader.line_num}: empty id or image")
        if cells["id"] in seen:
            raise ValueError(f"{csv_path} line {reader.line_num}: duplicate id {cells['id']!r}")
        seen.add(cells["id"])
        if cells["split"] not in SPLIT_CHOICES[:-1]:
            raise ValueError(
                f"{csv_path} line {reader.line_num}: unknown split {cells['split']!r} "
                f"(allowed: {', '.join(SPLIT_CHOICES[:-1])})"
            )
        if split != "all" and cells["split"] != split:
            continue
        if not allow_outside and leaves_root(root, cells["image"]):
            raise outside_error(
                root,
                f"{csv_path} line {reader.line_num}",
                cells["image"],
                f'dataset.json has "{ALLOW_OUTSIDE_KEY}": true or --allow-outside-paths is given',
            )
        path = root / cells["image"]
        meta = {"path": str(path), "label": cells["label"], "split": cells["split"]}
        items.append(Item(cells["id"], path, meta))
    if not items:
        raise ValueError(f"{csv_path}: no rows in split {split!r}")
    return items


def folder_items(folder: str | Path, allow_outside: bool = False) -> list[Item]:
    """Every image file under ``folder`` (recursively, by suffix), sorted by relative path.

    Ids are the POSIX paths relative to ``folder`` (``"sub/a.png"``); metadata holds
    ``path`` and an empty ``label``. A symbolic link leading out of ``folder`` is refused
    unless ``allow_outside``.
    """
    items = list(iter_folder_items(folder, allow_outside))
    if not items:
        raise ValueError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {Path(folder).expanduser().absolute()}"
        )
    return items


def iter_folder_items(folder: str | Path, allow_outside: bool = False) -> Iterator[Item]:
    """:func:`folder_items` one at a time, in the same order, holding only the listings
    of the folders on the current path (an archive of millions of files in thousands of
    folders is never listed at once).

    A folder's entries are visited in the order of their relative paths: a sub-folder
    ``d`` sorts as ``"d/"``, because every path below it starts with that.
    """
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise ValueError(f"image folder not found: {folder}")
    yield from _walk(folder, folder, allow_outside)


def _walk(root: Path, here: Path, allow_outside: bool) -> Iterator[Item]:
    try:
        entries = list(os.scandir(here))
    except OSError as err:
        raise ValueError(f"cannot list {here}: {err.strerror}") from None
    # Sub-folders that are symbolic links are not entered (as Path.rglob).
    keyed = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in entries]
    for key, entry in sorted(keyed, key=lambda pair: pair[0]):
        path = Path(entry.path)
        if key.endswith("/"):
            yield from _walk(root, path, allow_outside)
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            relative = path.relative_to(root).as_posix()
            if not allow_outside and leaves_root(root, path):
                raise outside_error(root, "--images", relative, "--allow-outside-paths is given")
            yield _file_item(relative, path)


def file_items(paths: list[str | Path]) -> list[Item]:
    """Image files named one by one; ids are the paths as given."""
    items = [_file_item(str(p), Path(p).expanduser().absolute()) for p in paths]
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"image(s) given more than once: {', '.join(duplicates)}")
    return items


def _file_item(item_id: str, path: Path) -> Item:
    return Item(item_id, path, {"path": str(path), "label": ""})
