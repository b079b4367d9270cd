"""Saving and loading Y-Net models: atomic writes, Keras safe mode only."""

from __future__ import annotations

from pathlib import Path

import keras

from deploy.atomic import atomic_path
from keras_ynet.model import YNet


def save_ynet(model: YNet, path: str | Path) -> Path:
    """Saves ``model`` to ``path`` (.keras) atomically.

    The file is written under a temporary name in the same folder and renamed into
    place, so a crash mid-save leaves the previous model intact.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a Y-Net model file must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def load_ynet(path: str | Path) -> YNet:
    """Loads a saved Y-Net in Keras safe mode, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad archive
        raise ValueError(f"{path}: not a loadable Keras model ({type(e).__name__}: {e})") from None
    if not isinstance(model, YNet):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a YNet")
    return model
