"""A training run a person can watch and resume: TensorBoard logs, curves, and a rerun
of an interrupted run that continues where it stopped and ends where an uninterrupted
run ends."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_train import TINY_RUN

from keras_ynet.history import read_history_rows
from keras_ynet.phantoms import make_phantoms
from keras_ynet.run_config import RunConfig
from keras_ynet.saving import load_ynet
from keras_ynet.train import train

EPOCHS = 3


class Interrupted(RuntimeError):
    pass


class InterruptAfter(keras.callbacks.Callback):
    """Stops the run like a killed process: an exception once epoch ``epoch`` (0-based)
    has ended and every callback before this one has seen it."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted(f"stopped after epoch {epoch + 1}")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "phantoms"
    make_phantoms(root, n_per_class=12, image_size=64, seed=0)
    return root


def config_for(data, out, **overrides):
    return RunConfig(
        data=str(data), out=str(out), image_size=64, augment=True,
        **{**TINY_RUN, "epochs": EPOCHS, **overrides},
    )  # fmt: skip


@pytest.mark.slow  # three short trainings
def test_an_interrupted_run_resumes_and_ends_like_an_uninterrupted_one(phantoms, tmp_path):
    whole = train(config_for(phantoms, tmp_path / "whole"), verbose=0)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train(config_for(phantoms, out), verbose=0, callbacks=[InterruptAfter(0)])
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert [r["epoch"] for r in read_history_rows(out / "history.csv")] == ["0"]

    resumed = train(config_for(phantoms, out), verbose=0)
    info, whole_info = resumed["info"], whole["info"]
    assert info["resumed_at_epoch"] == 2
    assert info["epochs_run"] == whole_info["epochs_run"] == EPOCHS
    steps = 20 // 8  # 24 train phantoms, 4 held out: 20 fit images in batches of 8
    assert info["optimizer_steps"] == whole_info["optimizer_steps"] == EPOCHS * steps
    assert not (out / "backup").exists()  # a finished run leaves no resume state

    # The resumed run met the same batches and augmentations in its later epochs, so
    # it logged the same losses and chose the same epoch as the uninterrupted run.
    rows = read_history_rows(out / "history.csv")
    whole_rows = read_history_rows(tmp_path / "whole" / "history.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for key in ("loss", "cls_loss", "seg_loss", "val_loss", "val_map@10"):
        np.testing.assert_allclose(
            [float(r[key]) for r in rows], [float(r[key]) for r in whole_rows], rtol=1e-5
        )
    assert info["best_epoch"] == whole_info["best_epoch"]
    weights = load_ynet(out / "model.keras").get_weights()
    whole_weights = load_ynet(tmp_path / "whole" / "model.keras").get_weights()
    for w, ref in zip(weights, whole_weights, strict=True):
        np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)

    for name in ("training_curves.png", "tensorboard/train", "tensorboard/validation"):
        assert (out / name).exists(), name


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused(phantoms, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config_for(phantoms, out, epochs=2), verbose=0, callbacks=[InterruptAfter(0)])
    with pytest.raises(ValueError, match=r"other settings \(bits\)"):
        train(config_for(phantoms, out, epochs=2, bits=32), verbose=0)


def test_a_second_training_into_a_busy_run_folder_fails_at_once(phantoms, tmp_path):
    import threading

    from deploy.locking import LockTimeout, writer_lock

    out = tmp_path / "run"
    out.mkdir()
    held, release = threading.Event(), threading.Event()

    def first_run():  # holds the run folder's lock as a training run does
        with writer_lock(out / "backup"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        held.wait(30)
        with pytest.raises(LockTimeout, match=r"run/backup is being written by"):
            train(config_for(phantoms, out), verbose=0)
    finally:
        release.set()
        thread.join()
    assert not (out / "history.csv").exists()
