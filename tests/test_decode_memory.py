"""Large images: the device prepares them with bounded memory and the same bytes as before."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.preprocess import load_image, load_prepared, prepare_image

REPO = Path(__file__).resolve().parents[1]


def write(folder: Path, mode: str, size: tuple[int, int], seed: int, suffix=".png") -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16", "I"):
        values = rng.integers(0, 65536, (h, w)).astype(np.uint16)
        image = Image.fromarray(values)
        image = image if mode == "I;16" else image.convert("I")
    else:
        rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
        image = rgba.convert(mode) if mode != "P" else rgba.convert("RGB").quantize(64)
    path = folder / f"{mode.replace(';', '_')}_{w}x{h}{suffix}"
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I;16", "I", "RGB", "RGBA", "P", "CMYK"])
def test_load_prepared_gives_the_bytes_of_load_then_prepare(tmp_path, mode):
    suffix = ".tif" if mode in ("CMYK", "I") else ".png"
    for i, size in enumerate([(64, 64), (97, 53), (301, 203), (20, 40), (1030, 70)]):
        path = write(tmp_path, mode, size, seed=i, suffix=suffix)
        for side, channels in ((64, 1), (64, 3), (48, 3)):
            want = prepare_image(load_image(path), side, channels)
            got = load_prepared(path, side, channels)
            assert got.dtype == np.uint8 and got.shape == (side, side, channels)
            np.testing.assert_array_equal(got, want, err_msg=f"{path.name} {side} {channels}")


def test_load_prepared_refuses_as_load_image(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    for path in (tmp_path / "missing.png", tmp_path / "empty.png"):
        with pytest.raises(ValueError) as want:
            load_image(path)
        with pytest.raises(ValueError, match=re.escape(str(want.value))):
            load_prepared(path, 64, 1)


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_images_at_the_size_limit_peak_under_400_mib():
    done = subprocess.run(
        [sys.executable, "bench/bench_decode_memory.py"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=True,
    )  # fmt: skip
    peaks = dict(re.findall(r"^(.+?)(?: \(\d+ KiB\))?: peak RSS +([\d.]+) MiB", done.stdout, re.M))
    assert set(peaks) == {"imports only", "16-bit grey 8192x8192 PNG", "RGB 8000x8000 PNG"}
    assert float(peaks["16-bit grey 8192x8192 PNG"]) < 400, done.stdout
    assert float(peaks["RGB 8000x8000 PNG"]) < 400, done.stdout
