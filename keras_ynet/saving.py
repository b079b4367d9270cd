"""Saving and loading Y-Net models: atomic writes, Keras safe mode only."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import keras

from deploy.atomic import atomic_path
from keras_ynet.model import YNet

# Members every Keras 3 ``.keras`` archive holds.
ARCHIVE_MEMBERS = ("config.json", "metadata.json")


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
    """Loads a saved Y-Net in Keras safe mode, with errors that name the file.

    Safe mode refuses archives that would run code when loaded (a ``Lambda`` layer
    holding Python bytecode), whatever ``keras.config`` says.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not a complete Keras archive, cannot be loaded safely, or holds
            another kind of model; the message is one line and names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    _check_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad archive
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        if "safe_mode" in reason:
            raise ValueError(
                f"{path}: refused: loading it would run code stored in the file (Keras safe "
                f"mode; {reason})"
            ) from None
        raise ValueError(f"{path}: not a loadable Keras model ({reason})") from None
    if not isinstance(model, YNet):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a YNet")
    return model


def _check_archive(path: Path) -> None:
    """A .keras file is a zip archive: refuses a truncated or foreign file up front.

    (Keras itself reports both as "File not found".)
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in ARCHIVE_MEMBERS if m not in names]
            if missing:
                raise ValueError(f"{path}: not a Keras model archive (no {', '.join(missing)})")
            broken = archive.testzip()  # CRC of every member: catches a damaged file
    except zipfile.BadZipFile:
        raise ValueError(
            f"{path}: not a Keras model archive (not a complete zip file: truncated, or "
            "another format)"
        ) from None
    except (OSError, EOFError, RuntimeError, NotImplementedError, zlib.error) as e:
        raise ValueError(f"{path}: damaged Keras model archive ({e})") from None
    if broken is not None:
        raise ValueError(f"{path}: damaged Keras model archive ({broken} fails its CRC check)")
