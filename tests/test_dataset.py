"""Dataset folder reading and validation: every error names labels.csv, the row and id."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_ynet.dataset import (
    DatasetError,
    Record,
    load_dataset,
    load_image,
    load_mask,
    validation_fold,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HEADER = "id,image,mask,label,split,note"


def write_pair(root: Path, rid: str, size=(8, 8), mask_value=1, mask_size=None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    h, w = size
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "images" / f"{rid}.png")
    mh, mw = mask_size or size
    mask = np.zeros((mh, mw), np.uint8)
    mask[: mh // 2] = mask_value
    Image.fromarray(mask).save(root / "masks" / f"{rid}.png")


def write_dataset(root: Path, rows: list[str], pairs=("a", "b", "c", "d"), meta=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rid in pairs:
        write_pair(root, rid)
    (root / "labels.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def good_rows() -> list[str]:
    return [
        f"{rid},images/{rid}.png,masks/{rid}.png,{label},{split},n{rid}"
        for rid, label, split in [
            ("a", "sick", "train"),
            ("b", "well", "train"),
            ("c", "sick", "test"),
            ("d", "well", "val"),
        ]
    ]


def problems_of(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    message = str(info.value)
    assert str(root / "labels.csv") in message
    return message


def test_valid_dataset_loads(tmp_path):
    spec = load_dataset(write_dataset(tmp_path / "tiny", good_rows()))
    assert [r.id for r in spec.records] == ["a", "b", "c", "d"]
    assert spec.class_names == ["sick", "well"]
    assert spec.mask_class_names == ["class_0", "class_1"]  # inferred: max value 1
    assert (spec.channels, spec.image_size, spec.mask_kind) == (3, (8, 8), "generic")
    assert [r.id for r in spec.split("train")] == ["a", "b"]
    assert spec.label_ids(spec.records).tolist() == [0, 1, 0, 1]
    assert spec.label_ids(spec.records).dtype == np.int32
    assert spec.extra_column(spec.records, "note") == ["na", "nb", "nc", "nd"]
    first = spec.records[0]
    assert first.image == (tmp_path / "tiny" / "images" / "a.png").absolute()
    assert first.extra == {"note": "na"}
    assert isinstance(first, Record)


def test_dataset_json_declares_classes_and_kind(tmp_path):
    meta = {"name": "demo", "mask_classes": ["bg", "lesion", "x"], "mask_kind": "lesion"}
    spec = load_dataset(write_dataset(tmp_path / "d", good_rows(), meta=meta))
    assert (spec.name, spec.mask_class_names, spec.mask_kind) == (
        "demo",
        ["bg", "lesion", "x"],
        "lesion",
    )
    assert spec.mirror_mask_classes == [0, 1, 2]  # no class names a side


def test_missing_labels_csv(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv not found"):
        load_dataset(tmp_path)


def test_empty_labels_csv(tmp_path):
    (tmp_path / "labels.csv").write_text("")
    with pytest.raises(DatasetError, match="empty file"):
        load_dataset(tmp_path)


def test_missing_required_column(tmp_path):
    (tmp_path / "labels.csv").write_text("id,image,mask,label\na,images/a.png,masks/a.png,x\n")
    message = problems_of(tmp_path)
    assert "line 1" in message and "missing required column(s) split" in message


def test_duplicate_id_names_both_rows(tmp_path):
    rows = good_rows() + ["a,images/b.png,masks/b.png,well,train,dup"]
    message = problems_of(write_dataset(tmp_path, rows))
    assert "row 5 (line 6), id 'a': duplicate id (first used in row 1)" in message


def test_unknown_split(tmp_path):
    rows = good_rows()
    rows[1] = rows[1].replace(",train,", ",tran,")
    message = problems_of(write_dataset(tmp_path, rows))
    assert "row 2 (line 3), id 'b': unknown split 'tran'" in message


def test_missing_and_unreadable_files(tmp_path):
    root = write_dataset(tmp_path, good_rows())
    (root / "images" / "b.png").unlink()
    (root / "masks" / "c.png").write_bytes(b"not a png at all")
    data = (root / "images" / "d.png").read_bytes()
    (root / "images" / "d.png").write_bytes(data[: len(data) // 2])
    message = problems_of(root)
    assert "3 problem(s)" in message
    assert f"row 2 (line 3), id 'b': image file not found: {root / 'images' / 'b.png'}" in message
    assert f"row 3 (line 4), id 'c': cannot read mask {root / 'masks' / 'c.png'}" in message
    assert f"row 4 (line 5), id 'd': cannot read image {root / 'images' / 'd.png'}" in message


def test_mask_values_outside_declared_classes(tmp_path):
    root = write_dataset(tmp_path, good_rows(), meta={"mask_classes": ["bg", "fg"]})
    write_pair(root, "c", mask_value=5)
    message = problems_of(root)
    assert f"row 3 (line 4), id 'c': mask {root / 'masks' / 'c.png'} has values [5]" in message


def test_mask_values_outside_known_layout(tmp_path):
    # A folder named like RIM-ONE gets background/disc/cup without dataset.json.
    root = write_dataset(tmp_path / "my_rimone", good_rows())
    write_pair(root, "a", mask_value=3)
    assert "id 'a': mask" in problems_of(root)
    write_pair(root, "a", mask_value=2)
    assert load_dataset(root).mask_class_names == ["background", "disc", "cup"]


def test_mask_size_mismatch(tmp_path):
    root = write_dataset(tmp_path, good_rows())
    write_pair(root, "b", mask_size=(8, 6))
    assert "id 'b': mask" in (message := problems_of(root))
    assert "is 6x8 but its image is 8x8" in message


def test_empty_train_split(tmp_path):
    rows = [r.replace(",train,", ",test,") for r in good_rows()]
    assert "train split is empty" in problems_of(write_dataset(tmp_path, rows))


def test_reports_every_problem_and_a_one_line_summary(tmp_path):
    rows = [f"x{i},images/a.png,masks/a.png,sick,nope,n" for i in range(25)]
    root = write_dataset(tmp_path, good_rows() + rows)
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    message = str(info.value)
    assert "25 problem(s)" in message and message.count("unknown split 'nope'") == 25
    assert "row 5 (line 6), id 'x0'" in message and "row 29 (line 30), id 'x24'" in message
    assert len(info.value.problems) == 25
    assert info.value.summary == (
        f"invalid dataset {root / 'labels.csv'}: row 5 (line 6), id 'x0': unknown split "
        "'nope' (allowed: train, val, test) (and 24 more; see --debug)"
    )


def test_load_image_conversions(tmp_path):
    # Images are tiled to 8 x 8 or more: smaller ones are refused (preprocess.MIN_SIDE).
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").shape == (8, 9, 3)
    assert load_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]  # alpha dropped
    la = np.stack([np.full((8, 9), 7, np.uint8), np.zeros((8, 9), np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").tolist() == np.full((8, 9, 1), 7).tolist()
    pal = Image.new("P", (9, 8))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[0, 0].tolist() == [10, 20, 30]
    # 16-bit grey: round(v / 257), so 65535 -> 255, 257 -> 1, 128 -> 0, 129 -> 1.
    deep = np.tile(np.array([[0, 128, 129, 257, 65535]], np.uint16), (8, 2))
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png")[0, :5, 0].tolist() == [0, 0, 1, 1, 255]


def test_load_errors_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="junk.png"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(DatasetError, match="not found: .*none.png"):
        load_mask(tmp_path / "none.png")
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = [255, 0, 0]
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DatasetError, match="colour.png: colour mask"):
        load_mask(tmp_path / "colour.png")


def test_validation_fold_is_stratified_and_deterministic():
    records = [
        Record(f"r{i}", Path(f"{i}.png"), None, "a" if i < 30 else "b", "train") for i in range(40)
    ]
    train, val = validation_fold(records, fraction=0.1, seed=3)
    assert sorted(r.label for r in val) == ["a", "a", "a", "b"]  # round(3.0), round(1.0)
    assert {r.id for r in train} | {r.id for r in val} == {r.id for r in records}
    assert not {r.id for r in train} & {r.id for r in val}
    assert validation_fold(records, fraction=0.1, seed=3) == (train, val)
    assert validation_fold(records, fraction=0.1, seed=4)[1] != val
    with pytest.raises(ValueError, match="train-split records only"):
        validation_fold([*records, Record("t", Path("t.png"), None, "a", "test")])


@pytest.mark.parametrize(
    "name, counts, n_classes, mask_classes, channels, mirror",
    [("jsrt", (223, 24), 3, 4, 1, [0, 2, 1, 3]), ("rimone_dl", (437, 48), 2, 3, 3, [0, 1, 2])],
)
def test_real_datasets(name, counts, n_classes, mask_classes, channels, mirror):
    root = SHARED_DATA / name
    if not (root / "labels.csv").is_file():
        pytest.skip(f"{root} not present")
    spec = load_dataset(root)
    assert (len(spec.split("train")), len(spec.split("test"))) == counts
    assert (len(spec.class_names), len(spec.mask_class_names)) == (n_classes, mask_classes)
    assert (spec.channels, spec.image_size, spec.mirror_mask_classes) == (
        channels,
        (256, 256),
        mirror,
    )


# ------------------------------------------------------------ mask value forms (issue #9)
def write_binary_dataset(root: Path, values=(0, 255), meta=None, missing_mask=()) -> Path:
    """Four 8x8 rows whose masks hold ``values`` (top half values[1], rest values[0])."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for rid, label, split in [("a", "x", "train"), ("b", "y", "train"), ("c", "x", "test")]:
        write_pair(root, rid)
        mask = np.full((8, 8), values[0], np.uint8)
        mask[:4] = values[1]
        Image.fromarray(mask).save(root / "masks" / f"{rid}.png")
        mask_cell = "" if rid in missing_mask else f"masks/{rid}.png"
        rows.append(f"{rid},images/{rid}.png,{mask_cell},{label},{split},n")
    (root / "labels.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_masks_of_0_and_255_read_as_background_and_foreground(tmp_path):
    spec = load_dataset(write_binary_dataset(tmp_path / "d"))
    assert spec.mask_class_names == ["background", "foreground"]
    mask = load_mask(spec.records[0].mask, spec.records[0].mask_map)
    assert mask[:4].tolist() == [[1] * 8] * 4 and mask[4:].tolist() == [[0] * 8] * 4


def test_dataset_json_maps_stored_values_to_classes(tmp_path):
    meta = {"mask_values": {"0": "background", "128": "lesion"}}
    spec = load_dataset(write_binary_dataset(tmp_path / "d", (0, 128), meta))
    assert spec.mask_class_names == ["background", "lesion"]
    assert spec.mask_map == ((0, 0), (128, 1))
    assert int(load_mask(spec.records[1].mask, spec.mask_map)[0, 0]) == 1


def test_a_value_the_map_does_not_name_is_refused_naming_the_mask(tmp_path):
    meta = {"mask_values": {"0": "background", "255": "lesion"}}
    root = write_binary_dataset(tmp_path / "d", (0, 128), meta)
    message = problems_of(root)
    assert "masks/a.png: values [128] are not among the mapped values [0, 255]" in message


def test_masks_of_0_and_200_still_look_like_intensities(tmp_path):
    assert "look like intensities" in problems_of(write_binary_dataset(tmp_path / "d", (0, 200)))


def test_rows_without_a_mask_load_as_missing(tmp_path):
    from keras_ynet.dataset import MISSING_MASK
    from keras_ynet.pipeline import load_arrays

    spec = load_dataset(write_binary_dataset(tmp_path / "d", missing_mask=("b",)))
    _, masks = load_arrays(spec.split("train"), 8, 1)
    assert masks[0, 0, 0] == 1 and masks[0, 7, 0] == 0
    assert (masks[1] == MISSING_MASK).all()


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_rows_leaving_the_dataset_folder_are_problems_unless_allowed(tmp_path, where):
    root = write_dataset(tmp_path / "ds", good_rows())
    write_pair(tmp_path, "x")  # tmp_path/images/x.png, masks/x.png: outside the dataset
    image = {
        "absolute": str(tmp_path / "images" / "x.png"),
        "dotdot": "../images/x.png",
        "symlink": "images/link.png",
    }[where]
    (root / "images" / "link.png").symlink_to(tmp_path / "images" / "x.png")
    rows = good_rows() + [f"e,{image},masks/a.png,sick,train,ne"]
    (root / "labels.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    message = problems_of(root)
    assert (
        f"row 5 (line 6), id 'e': image {image!r} is outside {root.absolute()} (absolute, '..' "
        'or a symbolic link leaving it); dataset.json "allow_outside_paths": true allows it'
    ) in message
    (root / "dataset.json").write_text('{"allow_outside_paths": true}')
    spec = load_dataset(root)
    assert spec.records[-1].image.resolve() == (tmp_path / "images" / "x.png").resolve()
