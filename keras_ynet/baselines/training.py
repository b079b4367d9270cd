"""The baselines' training loop, composed from the pieces :mod:`keras_ynet.train` uses.

Same split rule (a stratified validation fold cut from the train split with
:func:`keras_ynet.dataset.validation_fold`), same tf.data pipeline
(:func:`keras_ynet.pipeline.make_dataset`, augmentation included), same optimiser
(AdamW, cosine decay to 1%), same progress line, and the same checkpoint rule: keep the
weights with the best validation mAP@10 (convention ``k``), scored with the method's
own descriptor. The test split is never seen here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from keras_ynet.callbacks import VAL_KEY, BestValidation, RunProgress
from keras_ynet.training_data import TrainingData, compile_adamw_cosine, resolve_epochs


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
    epochs = resolve_epochs(config, data.steps) if epochs is None else epochs
    out.mkdir(parents=True, exist_ok=True)
    compile_adamw_cosine(model, config, data.steps, epochs)
    best = BestValidation(lambda wrapper: score_fn(wrapper.network), verbose=False)
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
        f"best_{VAL_KEY}": best.best,
        "parameters": model.network.count_params(),
    }
