"""How much a dataset's masks say about its labels: the retrieval a mask alone gives.

Y-Net's segmentation branch shapes the shared encoder toward what the masks outline.
That teaches the label when the masks outline what the labels are about (optic disc and
cup for glaucoma: +0.29 in Table III of docs/results.md); when they do not (lungs and
heart for a lung nodule) it can only regularise the encoder, which on JSRT still helped
in cross-validation. This module measures the masks' side of it before any training:
every train-split image with a mask queries all the others (leave one out), described
by its mask alone, and the mAP@10 of that ranking is set against the chance level of
the same labels.

The descriptor is the share of each cell of a coarse grid (16 x 16) that each mask
class covers (background and unlabelled pixels left out), standardised per feature and
ranked by Euclidean distance. It sees where and how large each class is, which is what
a segmentation loss teaches; it cannot see texture. So a masks-only score near chance
says the segmentation guidance has nothing to add to the labels: ``--seg-guidance auto``
then keeps it off the encoder (:func:`decide_seg_guidance`), and ``on`` prints a note.
The default is ``on``: on JSRT (masks at chance) the guidance still helped in
cross-validation, as a regulariser (docs/results.md, seventh session).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_ynet.masks import MISSING_MASK, load_mask
from keras_ynet.ranking_metrics import map_at_k_from_ranking, random_map_at_k

GRID = 16  # cells per side of the descriptor grid
SIGNAL_K = 10
SIGNAL_CONVENTION = "k"
# Images a signal is measured on at most (a seeded sample beyond): the distance matrix
# is N x N floats.
MAX_IMAGES = 2000
# Below this skill ((mAP - chance) / (1 - chance)) the masks count as saying little
# about the labels: RIM-ONE DL's disc/cup masks score 0.6, JSRT's lungs/heart 0.02.
LOW_SKILL = 0.1


@dataclasses.dataclass(frozen=True)
class MaskSignal:
    """mAP@k of masks-only leave-one-out retrieval and its chance level."""

    map: float
    chance: float
    n_images: int
    k: int = SIGNAL_K

    @property
    def skill(self) -> float:
        """(mAP - chance) / (1 - chance): 0 at chance, 1 for a perfect ranking."""
        return (self.map - self.chance) / (1.0 - self.chance) if self.chance < 1 else 0.0

    @property
    def low(self) -> bool:
        return self.skill < LOW_SKILL

    def as_dict(self) -> dict:
        return {
            f"map@{self.k}": round(float(self.map), 4),
            "chance": round(float(self.chance), 4),
            "skill": round(float(self.skill), 4),
            "n_images": self.n_images,
        }

    def summary(self) -> str:
        return (
            f"mask signal: the masks alone retrieve same-label train images at mAP@{self.k} "
            f"{self.map:.3f} (chance {self.chance:.3f}, skill {self.skill:.2f}, "
            f"{self.n_images} images)"
        )


def resolve_seg_guidance(setting: str, signal: MaskSignal | None) -> str:
    """``on`` or ``off`` for a ``--seg-guidance`` setting: ``auto`` is ``off`` when the
    masks' skill is below :data:`LOW_SKILL`, else ``on`` (also when nothing could be
    measured: the paper's way)."""
    if setting != "auto":
        return setting
    return "off" if signal is not None and signal.low else "on"


def decide_seg_guidance(spec, config) -> tuple[str, MaskSignal | None]:
    """The segmentation guidance (``on``/``off``) a run of ``config`` on ``spec`` trains
    with, and the mask signal it rests on.

    The signal is measured on the records training fits (the train split less the
    validation fold of ``config``), so training and anything that must know the outcome
    beforehand (the stored experiment runs) agree. ``no_fpn`` has no segmentation loss:
    nothing is measured.
    """
    from keras_ynet.dataset import validation_fold

    if config.variant == "no_fpn":
        return resolve_seg_guidance(config.seg_guidance, None), None
    fit_records, _ = validation_fold(spec.split("train"), config.val_fraction, seed=config.seed)
    signal = mask_signal(spec, fit_records, config.seed)
    return resolve_seg_guidance(config.seg_guidance, signal), signal


def guidance_line(setting: str, resolved: str, signal: MaskSignal | None) -> str:
    """What a training run prints about its segmentation guidance."""
    line = f"segmentation guidance: {resolved}"
    if setting == "auto":
        line += " (auto: " + (
            f"the masks' skill is below {LOW_SKILL}, so the mask head trains on detached "
            "features and the encoder learns from the labels alone)"
            if resolved == "off"
            else "the masks carry label information, so they train the encoder)"
        )
    elif resolved == "on" and signal is not None and signal.low:
        line += (
            "; the masks say little about the labels here, so the guidance can only "
            "regularise the encoder (on JSRT that still helped in cross-validation, "
            "docs/results.md); --seg-guidance auto or off trains the encoder without it"
        )
    elif resolved == "off":
        line += " (the mask head trains on detached features)"
    return line


def mask_descriptor(mask: np.ndarray, num_classes: int, grid: int = GRID) -> np.ndarray:
    """Share of each of ``grid`` x ``grid`` cells covered by each class 1..K-1, flattened
    (class-major). Cells split the mask's own height and width, so masks of any size at
    least ``grid`` pixels across give comparable descriptors."""
    height, width = mask.shape
    if height < grid or width < grid:
        raise ValueError(f"a {height}x{width} mask is smaller than the {grid}x{grid} grid")
    rows = np.linspace(0, height, grid + 1).astype(int)
    cols = np.linspace(0, width, grid + 1).astype(int)
    areas = np.outer(np.diff(rows), np.diff(cols)).astype(np.float64)
    cells = []
    for c in range(1, num_classes):
        hits = (mask == c).astype(np.float64)
        summed = np.add.reduceat(np.add.reduceat(hits, rows[:-1], axis=0), cols[:-1], axis=1)
        cells.append((summed / areas).ravel())
    return np.concatenate(cells) if cells else np.zeros(0)


def leave_one_out_signal(descriptors: np.ndarray, labels: np.ndarray, k: int = SIGNAL_K):
    """mAP@k (convention k) of each row querying all the others by Euclidean distance on
    standardised features, and its exact chance level (each query's own row left out)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n < 3:
        raise ValueError(f"a mask signal needs at least 3 images with masks, got {n}")
    x = np.asarray(descriptors, np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    squared = (x * x).sum(axis=1)
    dist = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
    np.fill_diagonal(dist, np.inf)
    # Stable sort: ties go to the lower index, like every ranking of this project; the
    # query itself (infinite distance) sorts last and is cut off.
    ranking = np.argsort(dist, axis=1, kind="stable")[:, : n - 1]
    k = min(k, n - 1)  # each query has n - 1 others to rank
    score = map_at_k_from_ranking(ranking, labels, labels, k, SIGNAL_CONVENTION)
    # Chance: each query against the n - 1 others, its own row removed once.
    chance = 0.0
    values, counts = np.unique(labels, return_counts=True)
    for value, count in zip(values, counts, strict=True):
        others = np.delete(labels, np.flatnonzero(labels == value)[0])
        chance += count * random_map_at_k(np.array([value]), others, k, SIGNAL_CONVENTION)
    return score, chance / n


def mask_signal(spec, records, seed: int = 0, max_images: int = MAX_IMAGES) -> MaskSignal | None:
    """The mask signal of ``records`` (the rows with a mask); None when fewer than 3 have
    one or there is a single label. Reads each mask once; a seeded sample of
    ``max_images`` rows beyond that many."""
    with_mask = [r for r in records if r.mask is not None]
    if len(with_mask) > max_images:
        pick = np.random.default_rng(seed).choice(len(with_mask), max_images, replace=False)
        with_mask = [with_mask[i] for i in sorted(pick)]
    labels = spec.label_ids(with_mask)
    if len(with_mask) < 3 or len(np.unique(labels)) < 2:
        return None
    num_classes = len(spec.mask_class_names)
    descriptors = []
    for r in with_mask:
        mask = load_mask(r.mask, r.mask_map)
        mask = np.where(mask == MISSING_MASK, 0, mask)  # unlabelled pixels count as no class
        descriptors.append(mask_descriptor(mask, num_classes))
    score, chance = leave_one_out_signal(np.stack(descriptors), labels)
    return MaskSignal(map=score, chance=chance, n_images=len(with_mask))


def main(argv=None) -> int:
    """``python -m keras_ynet.mask_signal DATA [DATA ...]``: the mask signal of each
    dataset's train split, one line each; 1 when a folder cannot be read."""
    import argparse
    import sys

    from keras_ynet.dataset import DatasetError, load_dataset

    parser = argparse.ArgumentParser(
        prog="python -m keras_ynet.mask_signal",
        description="How well a dataset's masks alone retrieve same-label train images.",
    )
    parser.add_argument("data", nargs="+", help="dataset folders (labels.csv layout)")
    args = parser.parse_args(argv)
    status = 0
    for folder in args.data:
        try:
            spec = load_dataset(folder)
        except (DatasetError, OSError, ValueError) as e:
            print(f"{folder}: {e}", file=sys.stderr)
            status = 1
            continue
        signal = mask_signal(spec, spec.split("train"))
        if signal is None:
            print(f"{spec.name}: fewer than 3 train images with masks, or a single label")
        else:
            guidance = resolve_seg_guidance("auto", signal)
            print(f"{spec.name}: {signal.summary()}; --seg-guidance auto: {guidance}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
