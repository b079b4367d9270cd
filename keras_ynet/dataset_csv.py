"""labels.csv and dataset.json: the row type, the dataset error and row-level checks.

A dataset folder describes itself in two small files (standard library only, no images
are opened here)::

    labels.csv     id,image,mask,label,split[,extra columns...]
    dataset.json   {"name": ..., "mask_classes": [...], "mask_kind": ...,
                    "mask_values": {"<stored value>": "<mask class>", ...}}   (optional)

:func:`read_rows` parses labels.csv into :class:`Record` objects and collects every
row-level problem (field count, empty or duplicate id, unknown split, empty image or
label); :func:`split_problems` adds empty required splits and labels without train rows.
Problems are collected, not raised, so :func:`keras_ynet.dataset.load_dataset` can report
all of them in one :class:`DatasetError`; a file that cannot be parsed at all raises at
once.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from deploy.errors import one_line
from deploy.sources import ALLOW_OUTSIDE_KEY, leaves_root

REQUIRED_COLUMNS = ("id", "image", "mask", "label", "split")
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset folder, its labels.csv or one of its files is invalid.

    ``str(err)`` lists every problem, one per line; :attr:`summary` is one line.

    Args:
        message: the whole message.
        problems: the individual problems it lists (empty for a single problem).
        where: what the problems are in (the labels.csv path), for the summary.
    """

    def __init__(self, message: str, problems: list[str] | None = None, where: str = ""):
        super().__init__(message)
        self.problems = list(problems or [])
        self.where = where

    @property
    def summary(self) -> str:
        """One line: the first problem and how many more, or the whole message."""
        if not self.problems:
            return one_line(str(self))
        more = len(self.problems) - 1
        tail = f" (and {more} more; see --debug)" if more else ""
        return one_line(f"invalid dataset {self.where}: {self.problems[0]}{tail}")


@dataclass(frozen=True)
class Record:
    """One row of labels.csv, with file paths made absolute.

    ``mask_map`` holds (stored pixel value, mask class index) pairs when the mask files
    do not store class indices (0/255 binary masks, dataset.json ``mask_values``); empty
    means the stored value is the class index.
    """

    id: str
    image: Path
    mask: Path | None
    label: str
    split: str
    extra: dict[str, str] = field(default_factory=dict, hash=False)
    mask_map: tuple[tuple[int, int], ...] = ()


def read_dataset_json(root: Path, problems: list[str]) -> dict:
    """``root/dataset.json`` as a dict ({} when absent); a bad ``mask_classes`` is dropped.

    Raises:
        DatasetError: when the file is not a JSON object.
    """
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    classes = meta.get("mask_classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        problems.append(f"{path}: mask_classes must be a list of names")
        meta.pop("mask_classes")
    if meta.get(ALLOW_OUTSIDE_KEY, False) not in (True, False):
        problems.append(f"{path}: {ALLOW_OUTSIDE_KEY} must be true or false")
        meta.pop(ALLOW_OUTSIDE_KEY)
    licence = meta.get("licence")
    if licence is not None and (not isinstance(licence, str) or not licence.strip()):
        problems.append(f"{path}: licence must be a non-empty string (the data's licence note)")
        meta.pop("licence")
    values = meta.get("mask_values")
    if values is not None:
        ok = (
            isinstance(values, dict)
            and values
            and all(
                isinstance(k, str) and k.strip().isdigit() and int(k) < 256 and isinstance(v, str)
                for k, v in values.items()
            )
        )
        if not ok:
            problems.append(
                f"{path}: mask_values must map stored pixel values 0..255 to mask class "
                'names, e.g. {"0": "background", "255": "lesion"}'
            )
            meta.pop("mask_values")
    return meta


def read_rows(
    csv_path: Path, problems: list[str], allow_outside: bool = False
) -> list[tuple[str, Record]]:
    """Parses labels.csv into (row prefix for messages, Record); row-level problems.

    An image or mask path that leaves the dataset folder (absolute, ``..`` or a symbolic
    link out of it; :func:`deploy.sources.leaves_root`) is a problem unless
    ``allow_outside`` (dataset.json ``"allow_outside_paths": true``).

    Raises:
        DatasetError: when the file is unreadable, not UTF-8 text, has no usable header
            or no data rows.
    """
    root = csv_path.parent.absolute()
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{csv_path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start}): save labels.csv as UTF-8 CSV"
        ) from e
    except OSError as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e
    if "\0" in text:
        raise DatasetError(
            f"{csv_path} holds NUL bytes: binary data or UTF-16 text, not a UTF-8 CSV file"
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse_rows(csv_path, root, reader, problems, allow_outside)
    except csv.Error as e:  # a field over the csv module's size limit
        raise DatasetError(f"{csv_path} line {reader.line_num}: not a readable CSV: {e}") from e


def _parse_rows(
    csv_path: Path, root: Path, reader, problems: list[str], allow_outside: bool = False
) -> list[tuple[str, Record]]:
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise DatasetError(f"{csv_path}: empty file; expected header {','.join(REQUIRED_COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        shown = ",".join(header)
        shown = repr(shown if len(shown) <= 80 else shown[:77] + "...")
        raise DatasetError(
            f"{csv_path} line 1: missing required column(s) {', '.join(missing)}; header is {shown}"
        )
    duplicated = sorted({h for h in header if h and header.count(h) > 1})
    if duplicated:
        raise DatasetError(f"{csv_path} line 1: duplicate column(s) {', '.join(duplicated)}")
    rows, first_row_of = [], {}
    for values in reader:
        if not any(v.strip() for v in values):
            continue  # blank lines are not rows
        row_no = len(rows) + 1
        cells = dict(zip(header, (v.strip() for v in values), strict=False))
        rid = cells.get("id", "")
        where = f"row {row_no} (line {reader.line_num}), id {rid!r}"
        bad = []
        if len(values) != len(header):
            bad.append(f"has {len(values)} fields, header has {len(header)}")
        if not rid:
            bad.append("empty id")
        elif rid in first_row_of:
            bad.append(f"duplicate id (first used in row {first_row_of[rid]})")
        else:
            first_row_of[rid] = row_no
        split = cells.get("split", "")
        if split not in SPLITS:
            bad.append(f"unknown split {split!r} (allowed: {', '.join(SPLITS)})")
        for col in ("image", "label"):
            if not cells.get(col):
                bad.append(f"empty {col}")
        for col in ("image", "mask"):
            if cells.get(col) and not allow_outside and leaves_root(root, cells[col]):
                bad.append(
                    f"{col} {cells[col]!r} is outside {root} (absolute, '..' or a symbolic "
                    f'link leaving it); dataset.json "{ALLOW_OUTSIDE_KEY}": true allows it'
                )
        problems.extend(f"{where}: {b}" for b in bad)
        mask = cells.get("mask", "")
        extra = {k: v for k, v in cells.items() if k not in REQUIRED_COLUMNS}
        record = Record(
            rid, root / cells.get("image", ""), root / mask if mask else None,
            cells.get("label", ""), split, extra,
        )  # fmt: skip
        rows.append((where, record))
    if not rows:
        raise DatasetError(f"{csv_path}: no data rows")
    return rows


def split_problems(rows: list[tuple[str, Record]], required: tuple[str, ...]) -> list[str]:
    """Empty required splits, and labels without train rows (never learnt, never found)."""
    problems = []
    for split in required:
        if not any(r.split == split for _, r in rows):
            problems.append(f"no rows with split {split!r}: the {split} split is empty")
    if not any(r.split == "train" for _, r in rows):
        return problems
    trained = {r.label for _, r in rows if r.split == "train"}
    first_untrained: dict[str, tuple[str, set[str]]] = {}
    for where, r in rows:
        if r.label and r.label not in trained and r.split in SPLITS:
            first_untrained.setdefault(r.label, (where, set()))[1].add(r.split)
    for label, (where, splits) in first_untrained.items():
        problems.append(
            f"label {label!r} has no train rows, only {'/'.join(sorted(splits))} rows (first: "
            f"{where}): the model never learns it and its queries have no relevant images"
        )
    return problems
