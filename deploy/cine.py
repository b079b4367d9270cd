"""Which frame of a multi-frame DICOM (an ultrasound cine loop) ``index build/add``
encodes: the frame policy, ``--frames``.

* ``representative`` (the default): the Representative Frame Number (0028,6010) the
  modality or the sonographer recorded as the loop's picture, else the middle frame.
  A clinician browsing a loop sees that frame as its icon, and the middle of a loop is
  the steady part of the sweep (its first frames are often taken while the probe
  settles); one entry per loop keeps the top k from filling with frames of one loop.
* ``middle``: frame ``NumberOfFrames // 2`` (0-based).
* ``all``: every frame, each its own entry with id ``<id>#frame=<k>``: any frame can
  be found, at the cost of neighbouring frames crowding the results.
* an integer ``N`` (``--frame N``): frame N of every multi-frame file; a loop with N
  frames or fewer is a bad file (reported, see ``--skip-bad``).

Single-frame files (and non-DICOM images) are taken as they are, ``frame`` None.
Frames are 0-based everywhere (``--frame`` of search, the ``frame`` stored with a hit).
"""

from __future__ import annotations

from dataclasses import replace

# Only the standard library at the top: deploy.cli parses --frames with this module
# before numpy is loaded (deploy.sources needs nothing else either).
from deploy.sources import Item

POLICIES = ("representative", "middle", "all")
DEFAULT = "representative"


def parse_policy(text: str) -> str | int:
    """``--frames`` value: one of :data:`POLICIES` or a frame number >= 0."""
    if text in POLICIES:
        return text
    try:
        frame = int(text)
    except ValueError:
        frame = -1
    if frame < 0:
        raise ValueError(
            f"--frames {text!r}: expected {', '.join(POLICIES)} or a frame number >= 0"
        )
    return frame


def choose(count: int, representative: int | None, policy: str | int) -> list[int]:
    """The 0-based frames of a ``count``-frame file that ``policy`` encodes."""
    if policy == "all":
        return list(range(count))
    if policy == "middle":
        return [count // 2]
    if policy == "representative":
        return [count // 2 if representative is None else representative]
    return [int(policy)]


def expand(items: list[Item], policy: str | int) -> tuple[list[Item], list[tuple[str, str]]]:
    """Items with their ``frame`` set by ``policy``, and ``(path, message)`` of the DICOM
    files whose header cannot be read or that lack the chosen frame.

    A file with one frame keeps ``frame`` None; ``all`` gives a multi-frame file one item
    per frame, ids ``<id>#frame=<k>``.
    """
    from deploy import dicom, dicom_header
    from deploy.preprocess import ImageError

    out: list[Item] = []
    failures: list[tuple[str, str]] = []
    for item in items:
        if not dicom.is_dicom(item.path) or not item.path.is_file():
            out.append(item)  # the encoder reports a missing or unreadable file
            continue
        try:
            count, representative = dicom_header.frames(item.path)
        except ImageError as err:
            failures.append((str(item.path), str(err)))
            continue
        if count == 1:
            out.append(item)
            continue
        chosen = choose(count, representative, policy)
        if chosen[-1] >= count:
            failures.append((
                str(item.path),
                f"cannot read DICOM {item.path}: frame {chosen[-1]} out of range: the file "
                f"has {count} frame(s)",
            ))  # fmt: skip
            continue
        for frame in chosen:
            item_id = f"{item.id}#frame={frame}" if policy == "all" else item.id
            out.append(replace(item, id=item_id, frame=frame))
    return out, failures
