"""What every training run shares: the fit/validation cut of the train split, the
batches, and the optimiser (AdamW with cosine decay). Used by Y-Net and the baselines so
that every method sees the same data and schedule."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from keras_ynet.dataset import DatasetSpec, Record, validation_fold
from keras_ynet.pipeline import load_arrays, make_dataset


@dataclasses.dataclass
class TrainingData:
    """The train split cut into a fit part and a validation fold, decoded once."""

    spec: DatasetSpec
    fit_records: list[Record]
    val_records: list[Record]
    fit_images: np.ndarray
    val_images: np.ndarray
    fit_labels: np.ndarray
    val_labels: np.ndarray
    batch_size: int
    dataset: tf.data.Dataset

    @property
    def steps(self) -> int:
        return len(self.fit_records) // self.batch_size


def prepare_training_data(spec: DatasetSpec, config) -> TrainingData:
    """Cuts a stratified validation fold off the train split and builds the fit batches."""
    fit_records, val_records = validation_fold(
        spec.split("train"), config.val_fraction, seed=config.seed
    )
    if len(fit_records) < 2 or len(val_records) < 1:
        raise ValueError(f"{spec.root}: the train split is too small to hold out a validation fold")
    batch = min(config.batch_size, len(fit_records))
    size, channels = config.image_size, spec.channels
    dataset = make_dataset(
        spec, fit_records, size, channels, batch, augment=config.augment, shuffle=True,
        seed=config.seed, drop_remainder=True, mirror=config.flip,
        balanced=config.balanced_batches,
    )  # fmt: skip
    return TrainingData(
        spec=spec,
        fit_records=fit_records,
        val_records=val_records,
        fit_images=load_arrays(fit_records, size, channels)[0],
        val_images=load_arrays(val_records, size, channels)[0],
        fit_labels=spec.label_ids(fit_records),
        val_labels=spec.label_ids(val_records),
        batch_size=batch,
        dataset=dataset,
    )


def compile_adamw_cosine(model: keras.Model, config, steps_per_epoch: int, epochs: int) -> None:
    """Compiles ``model`` with AdamW, its learning rate decaying by cosine to 1%."""
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, steps_per_epoch * epochs), alpha=0.01
    )
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay))


def resolve_epochs(config, steps_per_epoch: int) -> int:
    """``config.epochs``, or the epochs that spend ``config.train_steps`` optimiser steps."""
    if config.epochs is not None:
        return config.epochs
    return max(1, math.ceil(config.train_steps / max(1, steps_per_epoch)))


def steps_per_epoch(spec: DatasetSpec, config) -> int:
    """Optimiser steps in one epoch of ``config`` on ``spec`` (after the validation fold)."""
    fit_records, _ = validation_fold(spec.split("train"), config.val_fraction, seed=config.seed)
    return max(1, len(fit_records) // max(1, min(config.batch_size, len(fit_records))))
