"""deploy.atomic: files and folders are the old version or the complete new one.

The last tests kill each real writer halfway (index, model, export) and check that the
previous version still loads and gives the same results, with no temporary file left.
"""

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from deploy import atomic
from deploy.index import HammingIndex


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


# Every writer, killed halfway: the previous version still loads and works -----------------


def half_written(real, path_arg: int):
    """``real``, except that it fails like a full disk after writing half of its file."""

    def write(*args, **kwargs):
        real(*args, **kwargs)
        path = Path(args[path_arg])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    return write


def index_of(rng, n, ids_from=0, **kwargs):
    index = HammingIndex(bits=64, fingerprint="enc-1", **kwargs)
    index.batch_add(
        rng.integers(0, 2, (n, 64), dtype=np.uint8), list(range(ids_from, ids_from + n))
    )
    index.build()
    return index


@pytest.mark.parametrize("backend", ["exact", "annoy"])
@pytest.mark.parametrize("step", ["build", "add"])
def test_index_save_killed_halfway_keeps_previous_index(tmp_path, monkeypatch, backend, step):
    rng = np.random.default_rng(0)
    queries = rng.integers(0, 2, (5, 64), dtype=np.uint8)
    index_of(rng, 40, backend=backend, n_trees=3).save(tmp_path / "idx")
    before = HammingIndex.load(tmp_path / "idx").batch_lookup(queries, 7)
    if step == "build":  # a new index over the old one
        new = index_of(rng, 60, backend=backend, n_trees=3)
    else:  # the old one, grown
        new = HammingIndex.load(tmp_path / "idx")
        new.batch_add(rng.integers(0, 2, (20, 64), dtype=np.uint8), list(range(40, 60)))
    monkeypatch.setattr(np, "save", half_written(np.save, 0))
    with pytest.raises(OSError, match="No space left"):
        new.save(tmp_path / "idx")
    monkeypatch.undo()
    after = HammingIndex.load(tmp_path / "idx")
    assert len(after) == 40 and after.batch_lookup(queries, 7) == before
    assert os.listdir(tmp_path) == ["idx"]  # no temporary folder, no backup


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_save_ynet_killed_halfway_keeps_previous_model(tmp_path, monkeypatch):
    import keras
    from conftest import TINY
    from keras.src.saving import saving_lib

    from keras_ynet.model import YNet
    from keras_ynet.saving import load_ynet, save_ynet

    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype("float32")
    keras.utils.set_random_seed(1)
    old = YNet(**TINY, bits=64)
    save_ynet(old, tmp_path / "model.keras")
    expected = old.predict(images, verbose=0)["hash"]
    keras.utils.set_random_seed(2)
    monkeypatch.setattr(saving_lib, "save_model", half_written(saving_lib.save_model, 1))
    with pytest.raises(OSError, match="No space left"):
        save_ynet(YNet(**TINY, bits=64), tmp_path / "model.keras")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.keras"]
    loaded = load_ynet(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(images, verbose=0)["hash"], expected)


def test_export_killed_halfway_keeps_previous_export(tmp_path, monkeypatch):
    import keras
    from conftest import TINY
    from test_bad_input_corpus import make_encoder, write_dataset, write_png

    import export.onnx_export
    from deploy.encoder import Encoder
    from export.exporter import export_encoder
    from keras_ynet.model import YNet
    from keras_ynet.saving import save_ynet

    art = tmp_path / "art"
    make_encoder(art)  # the previous export
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    query = write_png(tmp_path / "query.png", seed=3)
    expected = Encoder.open(art / "encoder.onnx").encode_file(query)
    data = write_dataset(tmp_path / "data")
    keras.utils.set_random_seed(0)
    save_ynet(YNet(**TINY, bits=64), tmp_path / "model.keras")

    def export_onnx(encoder, path, metadata):  # the ONNX writer dies after half a model
        Path(path).write_bytes(b"\x08\x08\x12\x07partial")
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(export.onnx_export, "export_onnx", export_onnx)
    with pytest.raises(OSError, match="No space left"):
        export_encoder(tmp_path / "model.keras", data, art, log=lambda line: None)
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before
    np.testing.assert_array_equal(Encoder.open(art / "encoder.onnx").encode_file(query), expected)
    assert sorted(os.listdir(tmp_path)) == ["art", "data", "model.keras", "query.png"]


# ------------------------------------------------------------ the one way a command ends
def test_run_command_turns_failures_into_one_line_and_a_status(capsys):
    from deploy.errors import run_command

    assert run_command(lambda: None, debug=False) == 0
    assert run_command(lambda: 3, debug=False) == 3

    def fails():
        raise ValueError("labels.csv line 3:\n  empty id")

    assert run_command(fails, debug=False) == 1
    assert capsys.readouterr().err == "error: labels.csv line 3: empty id\n"

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted, debug=False, interrupted="stopped; nothing written") == 130
    assert capsys.readouterr().err == "error: stopped; nothing written\n"
    with pytest.raises(ValueError, match="empty id"):
        run_command(fails, debug=True)
