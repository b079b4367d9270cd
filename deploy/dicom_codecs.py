"""Which compressed DICOM transfer syntaxes this installation decodes, and what to install
for the others.

pydicom decodes compressed pixel data through plugins; the requirements pin those that
cover what ultrasound and X-ray archives hold and are permissively licensed:

* RLE Lossless: pydicom itself;
* JPEG Baseline (8-bit) and JPEG Extended (8-bit samples), JPEG 2000: Pillow;
* JPEG-LS (lossless and near-lossless): pyjpegls (CharLS, MIT/BSD).

JPEG Lossless (process 14) and 12-bit JPEG Extended need pylibjpeg with
pylibjpeg-libjpeg (GPL-3.0, so not pinned here: a device build decides on that licence)
or python-gdcm; a file in such a syntax is refused with one line naming the file, the
syntax and the packages that would decode it.
"""

from __future__ import annotations

# pydicom plugin name -> what to pip install for it, by transfer syntax family. The
# pylibjpeg plugin needs a different backend package per family.
_PYLIBJPEG_BACKEND = {
    "rle": "pylibjpeg pylibjpeg-rle",
    "jpeg2000": "pylibjpeg pylibjpeg-openjpeg",
    "jpeg": "pylibjpeg pylibjpeg-libjpeg",
}
_PIP = {"gdcm": "python-gdcm", "pyjpegls": "pyjpegls", "pillow": "pillow"}


def _family(ts) -> str:
    name = ts.name.lower()
    if "rle" in name:
        return "rle"
    if "2000" in name:
        return "jpeg2000"
    return "jpeg"


def install_hint(ts, missing: list[str]) -> str:
    """``pip install ...`` lines for the plugins pydicom lists as missing for ``ts``.

    ``missing`` holds pydicom's own ``"<plugin> - requires ..."`` strings
    (``Decoder.missing_dependencies``).
    """
    commands = []
    for entry in missing:
        plugin = entry.split(" - ", 1)[0].strip()
        if plugin == "pylibjpeg":
            commands.append(f"pip install {_PYLIBJPEG_BACKEND[_family(ts)]}")
        elif plugin in _PIP:
            commands.append(f"pip install {_PIP[plugin]}")
    return " or ".join(dict.fromkeys(commands))


def check_decodable(ts, pixels, fail) -> None:
    """Raises ``fail(...)`` when no installed pydicom plugin decodes transfer syntax ``ts``.

    Args:
        ts: the file's transfer syntax (a pydicom UID).
        pixels: the ``pydicom.pixels`` module.
        fail: makes the ImageError naming the file from a problem text.
    """
    if not ts.is_compressed:
        return
    try:
        decoder = pixels.get_decoder(ts)
    except NotImplementedError:
        raise fail(
            f"compressed transfer syntax {ts.name} ({ts}) has no pydicom decoder at all"
        ) from None
    if decoder.is_available:
        return
    missing = list(decoder.missing_dependencies)
    hint = install_hint(ts, missing)
    raise fail(
        f"compressed transfer syntax {ts.name} ({ts}) needs a decoder that is not "
        f"installed: {hint or '; '.join(missing)}"
    )
