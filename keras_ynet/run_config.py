"""Run settings: a dataclass written as JSON next to every trained model."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

# The hash heads (keras_ynet.hash_head), named here so the command lines can offer them
# without importing TensorFlow.
HASH_HEADS = ("mean", "conv", "trained", "embedding", "guided")


@dataclasses.dataclass
class RunConfig:
    """Everything a training run needs besides the model's own config.

    Attributes:
        data: dataset folder (labels.csv layout); None = the built-in phantoms.
        out: run folder (model.keras, run_config.json, history.csv, metrics.json).
        epochs: passes over the training images; None = enough epochs for ``train_steps``
            optimiser steps (a small dataset gets more epochs, the same number of updates).
        train_steps: the step budget used when ``epochs`` is None.
        batch_size: images per step.
        image_size: side of the square model input, in pixels.
        bits: hash length.
        variant: ``ynet`` or an ablation.
        coupling: ``alpha``, ``uncertainty`` or ``fixed``.
        coupling_weights: (w_cls, w_seg) for ``fixed``.
        hash_head: one of :data:`HASH_HEADS` (see :mod:`keras_ynet.hash_head`).
        learning_rate: AdamW peak learning rate (cosine decay to 1% of it).
        weight_decay: AdamW weight decay.
        val_fraction: share of the train split held out (stratified) for checkpointing.
        seed: seeds the weights, the validation fold, shuffling and augmentation.
        augment: flips (where the masks allow), small rotation/scale, brightness/contrast.
        stem_filters, stage_widths, stage_blocks: encoder widths.
    """

    data: str | None = None
    out: str = "runs/default"
    epochs: int | None = None
    train_steps: int = 1800
    batch_size: int = 16
    image_size: int = 128
    bits: int = 64
    variant: str = "ynet"
    coupling: str = "uncertainty"
    coupling_weights: tuple[float, float] = (1.0, 1.0)
    hash_head: str = "trained"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    augment: bool = False
    stem_filters: int = 16
    stage_widths: tuple[int, ...] = (8, 16, 32, 64)
    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown run settings: {unknown}")
        for name in ("coupling_weights", "stage_widths", "stage_blocks"):
            if name in raw:
                raw[name] = tuple(raw[name])
        return cls(**raw)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: cannot read run config: {e}") from None


def add_augment_argument(parser: argparse.ArgumentParser) -> None:
    """``--augment/--no-augment``, shared by the training and experiment commands."""
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=RunConfig.augment,
        help="flips (where masks allow), small rotation/scale, brightness/contrast; off by "
        "default: measured no gain on rimone_dl and a loss on jsrt (docs/results.md)",
    )
