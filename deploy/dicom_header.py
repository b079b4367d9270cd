"""What is read from a DICOM header alone (no pixel data): the instance's identifiers,
which lead a hit back to the study in the PACS, and the frames of a cine loop."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

from deploy.preprocess import ImageError

# What an index stores of a DICOM source, so a hit leads back to the study in the PACS.
IDENTIFIERS = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
}


def read_header(path: str | Path):
    """The pydicom dataset of ``path`` without its pixel data.

    Raises:
        ImageError: pydicom missing, or the file is not readable as DICOM.
    """
    try:
        pydicom = importlib.import_module("pydicom")
    except ImportError:
        raise ImageError(f"pip install pydicom is needed to read DICOM {path}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, force=True, stop_before_pixels=True)
        except Exception as e:  # pydicom raises many kinds on damaged files
            raise ImageError(f"cannot read DICOM {path}: {type(e).__name__}: {e}") from None


def identifiers(path: str | Path, frame: int | None = None) -> dict[str, str | int | None]:
    """The instance's identifiers: ``study_instance_uid``, ``series_instance_uid``,
    ``sop_instance_uid`` (None where the file has none) and ``frame`` (as given; None for
    a single-frame file).

    Raises:
        ImageError: pydicom missing, or the file is not readable as DICOM.
    """
    ds = read_header(path)
    found: dict[str, str | int | None] = {}
    for key, keyword in IDENTIFIERS.items():
        value = ds.get(keyword)
        found[key] = str(value).strip() if value not in (None, "") else None
    found["frame"] = frame
    return found


def frames(path: str | Path) -> tuple[int, int | None]:
    """(NumberOfFrames, the 0-based Representative Frame Number or None).

    Representative Frame Number (0028,6010) is 1-based in the file; one outside
    ``1..NumberOfFrames`` counts as absent.

    Raises:
        ImageError: as :func:`read_header`, or NumberOfFrames not a positive integer.
    """
    ds = read_header(path)
    try:
        count = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise ImageError(
            f"cannot read DICOM {path}: NumberOfFrames {ds.get('NumberOfFrames')!r} is not "
            "an integer"
        ) from None
    if count < 1:
        raise ImageError(f"cannot read DICOM {path}: NumberOfFrames {count} is not positive")
    try:
        representative = int(ds.get("RepresentativeFrameNumber", 0) or 0) - 1
    except (TypeError, ValueError):
        representative = -1
    return count, representative if 0 <= representative < count else None
