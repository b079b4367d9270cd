"""Built-in phantom datasets: deterministic, in the real folder format, meaningful vCDR."""

import dataclasses

import numpy as np
import pytest

from keras_ynet.dataset import load_dataset, load_mask
from keras_ynet.phantoms import default_phantom_dir, main, make_phantoms
from keras_ynet.retrieval_report import vertical_cdr as vcdr_from_mask


def folder_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    make_phantoms(tmp_path / "a", n_per_class=3, image_size=32, seed=7)
    make_phantoms(tmp_path / "b", n_per_class=3, image_size=32, seed=7)
    make_phantoms(tmp_path / "c", n_per_class=3, image_size=32, seed=8)
    a, c = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "c")
    assert len(a) == 2 * 6 + 2  # images, masks, labels.csv, dataset.json
    assert a == folder_bytes(tmp_path / "b")
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.parts[0] == "images")


def test_fundus_phantoms_load_and_vcdr_orders_the_classes(tmp_path):
    spec = make_phantoms(tmp_path / "f", n_per_class=10, image_size=64, seed=0)
    again = load_dataset(tmp_path / "f")
    assert again.records == spec.records
    assert spec.class_names == ["glaucoma", "normal"]
    assert spec.mask_class_names == ["background", "disc", "cup"]
    assert (spec.channels, spec.image_size, spec.mask_kind) == (3, (64, 64), "fundus")
    assert (len(spec.split("train")), len(spec.split("test"))) == (18, 2)
    assert sorted(r.label for r in spec.split("test")) == ["glaucoma", "normal"]
    vcdr = spec.extra_column(spec.records, "vcdr_from_mask", float)
    for r, v in zip(spec.records, vcdr, strict=True):
        assert v == pytest.approx(vcdr_from_mask(load_mask(r.mask)), abs=1e-4)
    labels = np.array([r.label for r in spec.records])
    normal, glaucoma = vcdr[labels == "normal"], vcdr[labels == "glaucoma"]
    assert normal.max() < glaucoma.min()
    assert 0.25 < normal.mean() < 0.5 < 0.6 < glaucoma.mean() < 0.85
    assert np.std(glaucoma) > 0.03  # continuous within a class, not one value


def test_vcdr_from_mask_by_hand():
    mask = np.zeros((12, 12), np.uint8)
    mask[2:10, 3:9] = 1  # disc spans 8 rows
    mask[4:8, 4:7] = 2  # cup spans 4 rows
    assert vcdr_from_mask(mask) == 0.5
    assert vcdr_from_mask(np.where(mask == 2, 1, mask)) == 0.0
    assert np.isnan(vcdr_from_mask(np.zeros((4, 4), np.uint8)))


def test_chest_phantoms(tmp_path):
    spec = make_phantoms(tmp_path / "c", n_per_class=2, image_size=32, seed=0, kind="chest")
    assert spec.class_names == ["benign", "malignant", "non-nodule"]
    assert (spec.channels, len(spec.mask_class_names)) == (1, 4)
    # A mirror image swaps the lungs and keeps background and heart.
    assert spec.mask_class_names == ["background", "right_lung", "left_lung", "heart"]
    assert spec.mirror_mask_classes == [0, 2, 1, 3]
    one_sided = dataclasses.replace(spec, mask_class_names=["background", "left_lung"])
    assert one_sided.mirror_mask_classes is None
    mask = load_mask(spec.records[0].mask)
    cols = np.nonzero(mask == 1)[1]
    assert cols.mean() < 16 < np.nonzero(mask == 2)[1].mean()  # right lung on the image left


def test_default_phantom_dir_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_YNET_CACHE", str(tmp_path / "cache"))
    first = default_phantom_dir(image_size=32, n_per_class=2, seed=1)
    assert first.parent == tmp_path / "cache"
    stamp = (first / "labels.csv").stat().st_mtime_ns
    assert default_phantom_dir(image_size=32, n_per_class=2, seed=1) == first
    assert (first / "labels.csv").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp dirs
    assert len(load_dataset(first).records) == 4


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--n-per-class", "2", "--image-size", "32"]) == 0
    assert "4 images" in capsys.readouterr().out
    assert main(["--out", str(out)]) == 1  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err
