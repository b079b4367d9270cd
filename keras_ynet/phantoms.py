"""Built-in phantom datasets: synthetic images in the real datasets' exact folder format.

They let the project run on a fresh machine with no downloads, and they are generated
deterministically from a seed (numpy ``SeedSequence``; one child stream per image).

* ``fundus`` mimics RIM-ONE DL: an optic-nerve-head crop with an orange-red textured
  fundus, vessels, a bright optic disc and a paler cup inside it. The vertical cup/disc
  ratio (vCDR) sets the stage: ``normal`` 0.30-0.50, ``glaucoma`` 0.60-0.85, continuous
  within each class, so ranking by vCDR within a class means something (the DPSD problem).
  Masks: 0 background, 1 disc rim, 2 cup. Column ``vcdr_from_mask`` as in rimone_dl.
* ``chest`` mimics JSRT: a grey radiograph with lungs and heart (mask 0 background,
  1 right lung = image left, 2 left lung, 3 heart) and a lung nodule that is not in the
  mask: ``malignant`` larger and lobulated, ``benign`` smaller and round, ``non-nodule`` none.

Noise, blur, illumination and geometry vary per image so neither task is trivial.

Just over 300 lines on purpose: the two generators share the noise, edge and finishing
helpers and the one folder writer (labels.csv, dataset.json, the cache and its version),
so a change to the format or the randomness is made once for both kinds.

Usage::

    python -m keras_ynet.phantoms --out /tmp/phantoms --kind fundus --n-per-class 100
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from keras_ynet.cli_json import add_json_flag, run_with_result
from keras_ynet.dataset import CHEST_MASK_CLASSES, FUNDUS_MASK_CLASSES, DatasetSpec, load_dataset
from keras_ynet.retrieval_report import vertical_cdr

KINDS = {
    "fundus": {"labels": ("glaucoma", "normal"), "mask_classes": FUNDUS_MASK_CLASSES},
    "chest": {"labels": ("benign", "malignant", "non-nodule"), "mask_classes": CHEST_MASK_CLASSES},
}
# Bump when the generator changes, so cached phantoms are regenerated.
GENERATOR_VERSION = 1
TEST_FRACTION = 0.1
VCDR_RANGE = {"normal": (0.30, 0.50), "glaucoma": (0.60, 0.85)}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Roughly unit-variance noise, smooth over size / cells pixels."""
    grid = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size, size), Image.BICUBIC), dtype=np.float32)


def _soft(r: np.ndarray, radius_px: float, edge_px: float) -> np.ndarray:
    """Anti-aliased inside-ness of a shape with normalised radius ``r`` (1 at the edge)."""
    return np.clip((1.0 - r) * radius_px / edge_px + 0.5, 0.0, 1.0)


def _finish(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    """Acquisition effects: gain, gamma, blur, sensor noise; float -> uint8."""
    img = np.clip(img * rng.uniform(0.75, 1.2), 0, 255)
    img = 255.0 * (img / 255.0) ** rng.uniform(0.8, 1.25)
    pil = Image.fromarray(img.astype(np.uint8).squeeze())
    pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * size / 128))
    out = np.asarray(pil, dtype=np.float32)
    out = out + rng.normal(0.0, rng.uniform(2.0, 7.0), out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _fundus(rng: np.random.Generator, size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    s = size / 128.0
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    ry_d = size * rng.uniform(0.20, 0.27)
    rx_d = ry_d * rng.uniform(0.85, 1.0)
    ry_c = ry_d * rng.uniform(*VCDR_RANGE[label])
    rx_c = min(ry_c * rng.uniform(0.85, 1.1), 0.92 * rx_d)
    ccx = cx + rng.uniform(-0.4, 0.4) * (rx_d - rx_c)
    ccy = cy + rng.uniform(-0.3, 0.3) * (ry_d - ry_c)
    r_disc = np.hypot((xx - cx) / rx_d, (yy - cy) / ry_d)
    r_cup = np.hypot((xx - ccx) / rx_c, (yy - ccy) / ry_c)
    mask = (r_disc <= 1).astype(np.uint8)
    mask[(r_cup <= 1) & (r_disc <= 1)] = 2

    base = np.array([rng.uniform(150, 200), rng.uniform(55, 85), rng.uniform(20, 40)])
    texture = 1 + 0.08 * _smooth_noise(rng, size, 6) + 0.04 * _smooth_noise(rng, size, 20)
    centre_dist = np.hypot(xx - size / 2, yy - size / 2) / (0.75 * size)
    phi = rng.uniform(0, 2 * np.pi)
    tilt = 1 + rng.uniform(-0.3, 0.3) * ((xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)) / size
    light = (1 - 0.35 * np.clip(centre_dist, 0, 1) ** 2) * tilt
    img = base * (texture * light)[..., None]
    rim = np.array([rng.uniform(40, 70), rng.uniform(50, 80), rng.uniform(20, 40)])
    cup = np.array([rng.uniform(30, 60), rng.uniform(40, 70), rng.uniform(30, 60)])
    img += _soft(r_disc, ry_d, 1.5 * s)[..., None] * rim * rng.uniform(0.6, 1.2)
    img += _soft(r_cup, ry_c, rng.uniform(1.5, 4.0) * s)[..., None] * cup * rng.uniform(0.5, 1.2)

    # Vessels leave the disc centre along random, gently curving paths.
    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 8)):
        x, y = cx + rng.normal(0, 0.2 * rx_d), cy + rng.normal(0, 0.2 * ry_d)
        angle, width = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 3.0) * s
        for _ in range(64):
            angle += rng.normal(0, 0.08)
            nx, ny = x + np.cos(angle) * 2 * s, y + np.sin(angle) * 2 * s
            draw.line([(x, y), (nx, ny)], fill=255, width=max(1, round(width)))
            x, y, width = nx, ny, max(0.8 * s, width * 0.985)
    vessels = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.7 * s)), np.float32) / 255
    img *= 1 - rng.uniform(0.3, 0.5) * vessels[..., None] * np.array([0.6, 1.0, 1.0])
    return _finish(rng, img, size), mask


def _chest(rng: np.random.Generator, size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    s = size / 128.0

    def ellipse(cx, cy, rx, ry):
        return np.hypot((xx - cx * size) / (rx * size), (yy - cy * size) / (ry * size))

    j = lambda: rng.uniform(-0.02, 0.02)  # noqa: E731 - a small position jitter
    k = lambda: rng.uniform(0.92, 1.08)  # noqa: E731 - a small size jitter
    body = ellipse(0.5 + j(), 0.56, 0.46 * k(), 0.56)
    lungs = [
        ellipse(0.31 + j(), 0.46 + j(), 0.15 * k(), 0.30 * k()),  # right lung, image left
        ellipse(0.69 + j(), 0.46 + j(), 0.14 * k(), 0.29 * k()),
    ]
    heart = ellipse(0.56 + j(), 0.68 + j(), 0.16 * k(), 0.12 * k())
    mask = np.zeros((size, size), np.uint8)
    mask[lungs[0] <= 1], mask[lungs[1] <= 1], mask[heart <= 1] = 1, 2, 3

    img = np.full((size, size), rng.uniform(15, 40), np.float32)
    inside = _soft(body, 0.5 * size, 4 * s)
    img += inside * rng.uniform(90, 130)
    img += np.clip(1 - np.abs(xx - size / 2) / (0.05 * size), 0, 1) * 40  # spine
    for lung in lungs:
        img -= _soft(lung, 0.3 * size, 3 * s) * rng.uniform(60, 90)
    img += _soft(heart, 0.12 * size, 3 * s) * rng.uniform(50, 80)
    for row in range(8):  # ribs: bright arcs over the lung fields
        y0 = (0.18 + 0.05 * row + rng.uniform(-0.01, 0.01)) * size
        arc = y0 + 0.08 * size * ((xx - size / 2) / (0.5 * size)) ** 2
        img += inside * np.clip(1 - np.abs(yy - arc) / (0.012 * size), 0, 1) * rng.uniform(8, 20)
    img *= 1 + 0.06 * _smooth_noise(rng, size, 10)

    if label != "non-nodule":
        side = rng.integers(2)
        ys, xs = np.nonzero(lungs[side] <= 0.7)
        pick = rng.integers(len(ys))
        ny, nx = ys[pick] + 0.5, xs[pick] + 0.5
        if label == "malignant":  # larger, lobulated outline
            radius, wobble = rng.uniform(0.035, 0.06) * size, 0.25
        else:  # smaller and round
            radius, wobble = rng.uniform(0.018, 0.032) * size, 0.04
        theta = np.arctan2(yy - ny, xx - nx)
        outline = 1 + sum(
            wobble * rng.uniform(0.3, 1) * np.cos(h * theta + rng.uniform(0, 2 * np.pi))
            for h in range(2, 6)
        )
        r = np.hypot(xx - nx, yy - ny) / (radius * outline)
        img += _soft(r, radius, 1.2 * s) * rng.uniform(25, 45)
    return _finish(rng, img[..., None], size), mask


def _test_split(labels: list[str], rng: np.random.Generator) -> list[str]:
    """Stratified 9:1 train/test split (at least one test image per class of two or more)."""
    splits = ["train"] * len(labels)
    for name in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == name]
        n_test = max(1, int(np.floor(TEST_FRACTION * len(idx) + 0.5))) if len(idx) > 1 else 0
        for i in rng.permutation(idx)[:n_test]:
            splits[i] = "test"
    return splits


def make_phantoms(
    out_dir: str | Path,
    n_per_class: int = 100,
    image_size: int = 128,
    seed: int = 0,
    kind: str = "fundus",
    progress: bool = False,
) -> DatasetSpec:
    """Writes a phantom dataset (PNGs, labels.csv, dataset.json) and loads it back.

    Args:
        out_dir: folder to create; it must not exist or be empty.
        n_per_class: images per class label.
        image_size: side of the square images, in pixels.
        seed: the same seed gives byte-identical files.
        kind: ``fundus`` (RGB, glaucoma/normal) or ``chest`` (grey, benign/malignant/non-nodule).
        progress: show a progress bar.

    Returns:
        The validated :class:`DatasetSpec` of the new folder.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {sorted(KINDS)}")
    if n_per_class < 1 or image_size < 16:
        raise ValueError("n_per_class must be >= 1 and image_size >= 16")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; phantoms go into a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    labels = [name for name in KINDS[kind]["labels"] for _ in range(n_per_class)]
    streams = np.random.SeedSequence(seed).spawn(len(labels) + 1)
    splits = _test_split(labels, np.random.default_rng(streams[-1]))
    draw = _fundus if kind == "fundus" else _chest
    rows = []
    for i in tqdm(range(len(labels)), desc=f"{kind} phantoms", disable=not progress):
        rid = f"{kind}_{i:04d}"
        image, mask = draw(np.random.default_rng(streams[i]), image_size, labels[i])
        Image.fromarray(image.squeeze()).save(out / "images" / f"{rid}.png")
        Image.fromarray(mask).save(out / "masks" / f"{rid}.png")
        row = [rid, f"images/{rid}.png", f"masks/{rid}.png", labels[i], splits[i]]
        row += [int(np.sum(mask > 0)), int(np.sum(mask == 2))] if kind == "fundus" else []
        row += [f"{vertical_cdr(mask):.4f}"] if kind == "fundus" else []
        rows.append(row)
    header = ["id", "image", "mask", "label", "split"]
    header += ["disc_area_px", "cup_area_px", "vcdr_from_mask"] if kind == "fundus" else []
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *rows])
    meta = {
        "name": f"phantoms-{kind}",
        "mask_classes": list(KINDS[kind]["mask_classes"]),
        "mask_kind": kind,
        "generator": _generator_info(kind, n_per_class, image_size, seed),
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return load_dataset(out)


def _generator_info(kind: str, n_per_class: int, image_size: int, seed: int) -> dict:
    return {
        "module": "keras_ynet.phantoms",
        "version": GENERATOR_VERSION,
        "kind": kind,
        "n_per_class": n_per_class,
        "image_size": image_size,
        "seed": seed,
    }


def cache_root() -> Path:
    """``$KERAS_YNET_CACHE``, else ``$XDG_CACHE_HOME/keras_ynet`` (``~/.cache/keras_ynet``)."""
    if os.environ.get("KERAS_YNET_CACHE"):
        return Path(os.environ["KERAS_YNET_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "keras_ynet"


def default_phantom_dir(
    kind: str = "fundus", image_size: int = 128, seed: int = 0, n_per_class: int = 100
) -> Path:
    """The cached phantom dataset for these settings, generated on first use.

    Generation writes into a temporary sibling folder and renames it into place, so an
    interrupted or concurrent run never leaves a half-written dataset behind.
    """
    root = cache_root()
    name = f"phantoms-{kind}-{image_size}px-n{n_per_class}-seed{seed}-v{GENERATOR_VERSION}"
    final = root / name
    if (final / "dataset.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        make_phantoms(tmp, n_per_class, image_size, seed, kind, progress=sys.stderr.isatty())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "dataset.json").is_file():
                raise
            # Another process finished first; its copy is identical.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_ynet.phantoms", description=__doc__)
    parser.add_argument("--out", type=Path, help="new folder (default: the shared cache)")
    parser.add_argument("--kind", choices=sorted(KINDS), default="fundus")
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_json_flag(parser)
    args = parser.parse_args(argv)

    def work():
        if args.out is None:
            out = default_phantom_dir(args.kind, args.image_size, args.seed, args.n_per_class)
            spec = load_dataset(out, check_files=False, scan_masks=False)
        else:
            spec = make_phantoms(
                args.out, args.n_per_class, args.image_size, args.seed, args.kind, progress=True
            )
        counts = {s: len(spec.split(s)) for s in ("train", "test")}
        print(f"{spec.root}: {len(spec.records)} images, {counts}, classes {spec.class_names}")
        return 0, {
            "folder": str(spec.root),
            "kind": args.kind,
            "images": len(spec.records),
            "splits": counts,
            "classes": list(spec.class_names),
        }

    return run_with_result(work, args.json, args.debug)


if __name__ == "__main__":
    sys.exit(main())
