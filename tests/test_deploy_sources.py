"""deploy.sources: which files a dataset, a folder or a file list turns into, with ids."""

from __future__ import annotations

import pytest

from deploy import sources

CSV = """id,image,mask,label,split,extra
a,images/a.png,,normal,train,1
b,images/b.png,,glaucoma,test,2

c,images/c.png,,normal,train,3
"""


def write_dataset(root, text=CSV):
    root.mkdir()
    (root / "labels.csv").write_text(text, encoding="utf-8")
    return root


def test_dataset_items_pick_a_split_in_file_order(tmp_path):
    root = write_dataset(tmp_path / "d")
    train = sources.dataset_items(root)
    assert [i.id for i in train] == ["a", "c"]
    assert train[1].path == root.absolute() / "images" / "c.png"
    assert train[1].metadata == {"path": str(train[1].path), "label": "normal", "split": "train"}
    assert [i.id for i in sources.dataset_items(root, "test")] == ["b"]
    assert [i.id for i in sources.dataset_items(root, "all")] == ["a", "b", "c"]


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="labels.csv not found"):
        sources.dataset_items(tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        sources.dataset_items(tmp_path, "dev")
    root = write_dataset(tmp_path / "d", "id,image,label\na,a.png,x\n")
    with pytest.raises(ValueError, match="missing column.*split"):
        sources.dataset_items(root)
    root = write_dataset(tmp_path / "e", "id,image,label,split\na,a.png,x,train\na,b.png,x,test\n")
    with pytest.raises(ValueError, match="line 3: duplicate id 'a'"):
        sources.dataset_items(root)
    root = write_dataset(tmp_path / "f", CSV)
    with pytest.raises(ValueError, match="no rows in split 'val'"):
        sources.dataset_items(root, "val")


def test_folder_items_recurse_sort_and_skip_non_images(tmp_path):
    for name in ("b.png", "sub/a.PNG", "sub/deeper/c.jpg", "notes.txt", "a.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = sources.folder_items(tmp_path)
    assert [i.id for i in items] == ["b.png", "sub/a.PNG", "sub/deeper/c.jpg"]
    assert items[1].path == tmp_path / "sub" / "a.PNG"
    assert items[1].metadata == {"path": str(tmp_path / "sub" / "a.PNG"), "label": ""}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        sources.folder_items(tmp_path / "empty")
    with pytest.raises(ValueError, match="image folder not found"):
        sources.folder_items(tmp_path / "missing")


def test_file_items_keep_given_paths_as_ids(tmp_path):
    items = sources.file_items([tmp_path / "x.png", "rel/y.png"])
    assert [i.id for i in items] == [str(tmp_path / "x.png"), "rel/y.png"]
    assert items[1].path.is_absolute()
    with pytest.raises(ValueError, match="more than once: rel/y.png"):
        sources.file_items(["rel/y.png", "rel/y.png"])
