"""Training callbacks: retrieval-based checkpointing and a whole-run progress line."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from deploy.atomic import atomic_path
from keras_ynet.hash_head import bit_thresholds
from keras_ynet.ranking_metrics import SELECTION_CONVENTION, SELECTION_K, map_at_k
from keras_ynet.ynet_codes import hash_pre_activations

# The validation score's name in the epoch logs and history.csv: "val_map@10".
VAL_KEY = f"val_map@{SELECTION_K}"


class BestValidation(keras.callbacks.Callback):
    """Scores the model after each epoch and restores the best weights at the end.

    Args:
        score_fn: ``score_fn(model) -> float``, higher is better (validation mAP@10,
            :data:`keras_ynet.ranking_metrics.SELECTION_K`).
        key: name of the score in the epoch logs (and so in history.csv).
        state_dir: where the best score and weights so far are kept (``best.npz``,
            written atomically) so that a resumed run (``keras.callbacks.BackupAndRestore``)
            still restores the best epoch of the whole run, not of its last part; None
            keeps them in memory only.
    """

    STATE_FILE = "best.npz"

    def __init__(self, score_fn, key: str = VAL_KEY, verbose: bool = True, state_dir=None):
        super().__init__()
        self.score_fn, self.key, self.verbose = score_fn, key, verbose
        self.state_path = Path(state_dir) / self.STATE_FILE if state_dir else None
        self.best, self.best_epoch, self.best_weights = -np.inf, -1, None

    def on_train_begin(self, logs=None):
        if self.state_path is None or not self.state_path.is_file():
            return
        try:
            with np.load(self.state_path) as state:
                self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
                self.best_weights = [state[f"w{i}"] for i in range(int(state["n_weights"]))]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{self.state_path}: damaged resume state ({e}); delete it") from e

    def on_epoch_end(self, epoch, logs=None):
        value = float(self.score_fn(self.model))
        if logs is not None:
            logs[self.key] = value
        # ">=": on a tie the later (longer-trained) weights win.
        if value >= self.best:
            self.best, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()
            self._save_state()

    def _save_state(self):
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        weights = {f"w{i}": w for i, w in enumerate(self.best_weights)}
        with atomic_path(self.state_path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f, best=self.best, best_epoch=self.best_epoch,
                n_weights=len(self.best_weights), **weights,
            )  # fmt: skip

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                print(
                    f"restored weights of epoch {self.best_epoch + 1} ({self.key} = {self.best:.4f})"
                )


def ynet_validation_score(
    db_images, db_labels, val_images, val_labels, k=SELECTION_K, batch_size=32
):
    """A ``score_fn`` for :class:`BestValidation`: Y-Net's validation mAP@k (convention k,
    :data:`keras_ynet.ranking_metrics.SELECTION_CONVENTION`).

    Bit thresholds are fitted on the database images (the train part of the train
    split), the validation fold is queried against them by Hamming distance. The test
    split is never used.
    """
    db_labels, val_labels = np.asarray(db_labels), np.asarray(val_labels)

    def score(model) -> float:
        pre_db = hash_pre_activations(model, db_images, batch_size)
        pre_val = hash_pre_activations(model, val_images, batch_size)
        thresholds = bit_thresholds(model.hash_head, pre_db)
        db_bits = (pre_db > thresholds).astype(np.uint8)
        val_bits = (pre_val > thresholds).astype(np.uint8)
        return map_at_k(val_bits, val_labels, db_bits, db_labels, k, SELECTION_CONVENTION)

    return score


class RunProgress(keras.callbacks.Callback):
    """Prints one line per epoch: elapsed time, ETA of the whole run and images/s.

    A resumed run starts at a later epoch: the ETA counts the epochs this process ran.
    """

    def __init__(self, epochs: int, images_per_epoch: int):
        super().__init__()
        self.epochs, self.images_per_epoch = epochs, images_per_epoch
        self.train_seconds, self.epochs_here = 0.0, 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.train_seconds += now - self.epoch_start
        self.epochs_here += 1
        elapsed = now - self.start
        done = epoch + 1
        eta = elapsed / self.epochs_here * (self.epochs - done)
        rate = self.images_per_epoch / max(now - self.epoch_start, 1e-9)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", VAL_KEY))
        print(
            f"[{done}/{self.epochs}] elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min, "
            f"{rate:.1f} images/s, {shown}",
            flush=True,
        )

    @property
    def images_per_second(self) -> float:
        return self.images_per_epoch * self.epochs_here / max(self.train_seconds, 1e-9)
