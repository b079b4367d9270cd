"""The baselines' training loop, composed from the pieces :mod:`keras_ynet.train` uses.

Same split rule (a stratified validation fold cut from the train split with
:func:`keras_ynet.dataset.validation_fold`), same tf.data pipeline
(:func:`keras_ynet.pipeline.make_dataset`, augmentation included), same optimiser
(AdamW, cosine decay to 1%), same progress line, and the same checkpoint rule: keep the
weights with the best validation mAP@10 (convention ``k``), scored with the method's
own descriptor. The test split is never seen here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_ynet.baselines.evaluation import VAL_K
from keras_ynet.callbacks import RunProgress
from keras_ynet.dataset import DatasetSpec, Record, validation_fold
from keras_ynet.pipeline import load_arrays, make_dataset


class LossModel(keras.Model):
    """Trains a functional ``network`` by minimising ``loss_fn(labels, outputs, network)``.

    ``loss_fn`` returns a dict of scalar tensors holding at least ``loss``; every key
    named in ``term_names`` is logged each epoch. Only ``network``'s weights train.

    Args:
        network: the functional model (image -> outputs).
        loss_fn: pure loss function, see above.
        term_names: loss terms to log besides ``loss``.
    """

    def __init__(self, network: keras.Model, loss_fn: Callable | None, term_names=(), **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.loss_fn = loss_fn
        self.tracker_names = ["loss", *term_names]
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in self.tracker_names]

    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return list(self.loss_trackers)

    def update_trackers(self, terms: dict) -> dict:
        for tracker in self.loss_trackers:
            tracker.update_state(terms[tracker.name])
        return {t.name: t.result() for t in self.loss_trackers}

    def apply_loss(self, x, labels, loss_fn: Callable | None = None) -> dict:
        """One gradient step on ``network`` (``loss_fn`` defaults to the model's)."""
        loss_fn = loss_fn or self.loss_fn
        with tf.GradientTape() as tape:
            outputs = self.network(x, training=True)
            terms = loss_fn(labels, outputs, self.network)
        variables = self.network.trainable_variables
        grads = tape.gradient(terms["loss"], variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return terms

    def train_step(self, data):
        x, y = data[0], data[1]
        return self.update_trackers(self.apply_loss(x, y["label"]))


class BestValidation(keras.callbacks.Callback):
    """Scores the model after each epoch and restores the best weights at the end.

    Args:
        score_fn: ``score_fn(network) -> float``, higher is better (validation mAP@10).
        key: name of the score in the epoch logs.
    """

    def __init__(self, score_fn: Callable[[keras.Model], float], key: str = "val_map@10"):
        super().__init__()
        self.score_fn, self.key = score_fn, key
        self.best, self.best_epoch, self.best_weights = -np.inf, -1, None

    def on_epoch_end(self, epoch, logs=None):
        value = float(self.score_fn(self.model.network))
        if logs is not None:
            logs[self.key] = value
        # ">=": on a tie the later (longer-trained) weights win, as in Y-Net's checkpoint.
        if value >= self.best:
            self.best, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


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
    """The same fit/validation cut and batches as :func:`keras_ynet.train.train`."""
    fit_records, val_records = validation_fold(
        spec.split("train"), config.val_fraction, seed=config.seed
    )
    if len(fit_records) < 2 or len(val_records) < 1:
        raise ValueError(f"{spec.root}: the train split is too small to hold out a validation fold")
    batch = min(config.batch_size, len(fit_records))
    size, channels = config.image_size, spec.channels
    dataset = make_dataset(
        spec, fit_records, size, channels, batch, augment=config.augment, shuffle=True,
        seed=config.seed, drop_remainder=True,
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


def fit_model(
    model: LossModel,
    data: TrainingData,
    config,
    score_fn: Callable[[keras.Model], float],
    out: Path,
    epochs: int | None = None,
    verbose: int = 0,
) -> dict:
    """Compiles and trains ``model``; keeps the weights with the best validation score.

    Writes ``out/history.csv``. Returns training facts (seconds, best epoch and score).
    """
    epochs = config.epochs if epochs is None else epochs
    out.mkdir(parents=True, exist_ok=True)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, data.steps * epochs), alpha=0.01
    )
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay))
    best = BestValidation(score_fn)
    progress = RunProgress(epochs, data.steps * data.batch_size)
    started = time.perf_counter()
    model.fit(
        data.dataset,
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=[best, progress, keras.callbacks.CSVLogger(str(out / "history.csv"))],
        verbose=verbose,
    )
    return {
        "train_seconds": round(time.perf_counter() - started, 1),
        "epochs": epochs,
        "best_epoch": best.best_epoch + 1,
        f"best_val_map@{VAL_K}": best.best,
        "parameters": model.network.count_params(),
    }
