"""deploy.atomic: files and folders are the old version or the complete new one."""

import os

import numpy as np
import pytest

from deploy import atomic


def test_write_bytes_and_text_replace_content_without_leftovers(tmp_path):
    target = tmp_path / "a.bin"
    atomic.atomic_write_bytes(target, b"old")
    atomic.atomic_write_bytes(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    atomic.atomic_write_text(tmp_path / "b.json", '{"x": "é"}')
    assert (tmp_path / "b.json").read_text(encoding="utf-8") == '{"x": "é"}'
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.json"]


def test_atomic_path_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "codes.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["codes.npy"]


def test_atomic_path_keeps_extensions_so_np_save_writes_there(tmp_path):
    with atomic.atomic_path(tmp_path / "codes.npy") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".npy")
        np.save(tmp, np.arange(3))  # np.save would append .npy to any other name
    assert np.load(tmp_path / "codes.npy").tolist() == [0, 1, 2]
    with atomic.atomic_path(tmp_path / "model.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5")
        tmp.write_bytes(b"w")
    assert sorted(os.listdir(tmp_path)) == ["codes.npy", "model.weights.h5"]


def write_folder(folder, **files):
    for name, text in files.items():
        (folder / name).write_text(text)


def test_atomic_directory_replaces_whole_folder(tmp_path):
    final = tmp_path / "sub" / "index"
    with atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="1", b="1")
    with atomic.atomic_directory(final) as tmp:
        assert list(tmp.iterdir()) == []
        write_folder(tmp, a="2")
    assert sorted(os.listdir(final)) == ["a"]  # b from the old version is gone
    assert (final / "a").read_text() == "2"
    assert os.listdir(tmp_path / "sub") == ["index"]  # no temp folder, no backup


def test_atomic_directory_failure_keeps_old_folder(tmp_path):
    final = tmp_path / "index"
    with atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="old")
    with pytest.raises(RuntimeError), atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="new")
        raise RuntimeError("crash while writing")
    assert (final / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["index"]


def test_failed_swap_puts_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "index"
    with atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="old")
    real_replace = os.replace

    def replace(src, dst):  # the rename of the new folder into place fails
        if ".tmp-" in str(src):
            raise OSError("simulated rename failure")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"), atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="new")
    assert (final / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["index"]


def test_recover_after_crash_between_the_two_renames(tmp_path):
    final = tmp_path / "index"
    with atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="old")
    os.rename(final, atomic.backup_path(final))  # the state a crash there leaves
    assert atomic.recover_directory(final) == final
    assert (final / "a").read_text() == "old"
    assert os.listdir(tmp_path) == ["index"]


def test_recover_reads_backup_when_it_cannot_be_moved(tmp_path, monkeypatch):
    final = tmp_path / "index"
    final.mkdir()
    os.rename(final, atomic.backup_path(final))

    def read_only(src, dst):
        raise OSError("read-only file system")

    monkeypatch.setattr(atomic.os, "replace", read_only)
    assert atomic.recover_directory(final) == atomic.backup_path(final)


def test_next_write_deletes_stale_backup(tmp_path):
    final = tmp_path / "index"
    final.mkdir()
    atomic.backup_path(final).mkdir()  # a crash after the new folder was in place
    with atomic.atomic_directory(final) as tmp:
        write_folder(tmp, a="new")
    assert os.listdir(tmp_path) == ["index"]


def test_atomic_directory_refuses_a_file(tmp_path):
    (tmp_path / "index").write_text("x")
    with pytest.raises(NotADirectoryError), atomic.atomic_directory(tmp_path / "index"):
        pass
