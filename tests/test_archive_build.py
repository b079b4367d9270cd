"""``index build`` over an archive: streaming, resumable after an interruption, parallel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from index_files import read_items

from deploy import cli, parallel_encode, sources
from deploy.index import HammingIndex
from deploy.staging import Journal, StagingError, staging_path

BATCH = 4  # 14 train images: batches of 4, 4, 4, 2
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def build_argv(art, out, *more):
    return ["index", "build", "--encoder", art["dir"] / "encoder.onnx", "--data", art["data"],
            "--out", out, "--batch-size", BATCH, "--no-progress", *more]  # fmt: skip


def contents(folder: Path):
    return (folder / "codes.npy").read_bytes(), *read_items(folder)


@pytest.fixture
def reference(art, tmp_path_factory, capsys):
    """An uninterrupted build of the 14 train images."""
    out = tmp_path_factory.mktemp("ref") / "index"
    rc, _, err = run_cli(capsys, *build_argv(art, out))
    assert rc == 0, err
    return contents(out)


def interrupt_after(monkeypatch, batches: int) -> list[list[str]]:
    """Ctrl-C during the batch after ``batches`` committed ones; returns the ids of
    every batch the encoder was asked for."""
    asked: list[list[str]] = []
    monkeypatch.undo()  # wrap the real encoder, not an earlier wrapper
    real = parallel_encode.encode_chunk

    def encode(encoder, chunk, us_region=False):
        asked.append([item.id for item in chunk])
        if len(asked) > batches:
            raise KeyboardInterrupt
        return real(encoder, chunk, us_region)

    monkeypatch.setattr(parallel_encode, "encode_chunk", encode)
    return asked


def test_streaming_build_equals_the_keras_codes_in_source_order(art, reference):
    packed, ids, metadata = reference
    train = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "train"]
    assert ids == train
    expected = np.packbits(np.stack([art["bits"][i] for i in train]), axis=1)
    header = len(packed) - expected.nbytes
    assert packed[header:] == expected.tobytes()
    assert [Path(m["path"]).name for m in metadata] == [f"{i}.png" for i in train]
    assert {m["split"] for m in metadata} == {"train"}


def test_interrupted_build_resumes_without_re_encoding(
    art, tmp_path, reference, capsys, monkeypatch
):
    out = tmp_path / "index"
    asked = interrupt_after(monkeypatch, 2)
    rc, _, err = run_cli(capsys, *build_argv(art, out))
    assert rc == 130, err
    assert not out.exists()  # nothing published
    journal = staging_path(out) / "journal.jsonl"
    assert len(journal.read_text().splitlines()) == 2 * BATCH
    assert (staging_path(out) / "codes.bin").stat().st_size == 2 * BATCH * 8
    done_first = [i for batch in asked[:2] for i in batch]

    asked = interrupt_after(monkeypatch, 99)
    rc, out_text, err = run_cli(capsys, *build_argv(art, out, "--json"))
    assert rc == 0, err
    # Only the images the journal lacked were encoded, in two batches (4 + 2).
    again = [i for batch in asked for i in batch]
    assert [len(b) for b in asked] == [4, 2] and not set(again) & set(done_first)
    assert json.loads(out_text)["resumed_after"] == 8
    assert contents(out) == reference
    assert not staging_path(out).exists()


def test_a_torn_last_commit_is_re_encoded(art, tmp_path, reference, capsys, monkeypatch):
    out = tmp_path / "index"
    interrupt_after(monkeypatch, 1)
    run_cli(capsys, *build_argv(art, out))
    staging = staging_path(out)
    # A crash in the middle of the second commit: its codes written, its journal torn.
    with open(staging / "codes.bin", "ab") as f:
        f.write(b"\x01" * 8 * 3)
    with open(staging / "journal.jsonl", "a") as f:
        f.write('{"id": "half-writ')
    monkeypatch.undo()
    rc, _, err = run_cli(capsys, *build_argv(art, out))
    assert rc == 0, err
    assert contents(out) == reference


def test_damaged_staging_codes_are_named(art, tmp_path, capsys, monkeypatch):
    out = tmp_path / "index"
    interrupt_after(monkeypatch, 2)
    run_cli(capsys, *build_argv(art, out))
    codes_bin = staging_path(out) / "codes.bin"
    codes_bin.write_bytes(codes_bin.read_bytes()[:20])
    monkeypatch.undo()
    rc, _, err = run_cli(capsys, *build_argv(art, out))
    assert rc == 1
    assert f"staging codes {codes_bin} hold 20 bytes" in err and "names 8 codes (64 bytes)" in err


def test_resume_with_another_source_is_refused(art, tmp_path, capsys, monkeypatch):
    out = tmp_path / "index"
    interrupt_after(monkeypatch, 1)
    run_cli(capsys, *build_argv(art, out))
    monkeypatch.undo()
    rc, _, err = run_cli(capsys, *build_argv(art, out, "--split", "test"))
    assert rc == 1
    assert "holds an unfinished build with other source" in err
    assert f"delete {staging_path(out)} to start over" in err


@pytest.mark.slow  # spawns two worker processes (each imports ONNX Runtime)
def test_two_worker_processes_build_the_same_index(art, tmp_path, reference, capsys):
    out = tmp_path / "index"
    rc, out_text, err = run_cli(
        capsys, *build_argv(art, out, "--workers", 2, "--threads", 1, "--json")
    )
    assert rc == 0, err
    assert json.loads(out_text)["workers"] == 2
    assert contents(out) == reference


def test_restart_discards_an_interrupted_build(art, tmp_path, reference, capsys, monkeypatch):
    out = tmp_path / "index"
    interrupt_after(monkeypatch, 2)
    run_cli(capsys, *build_argv(art, out))
    asked = interrupt_after(monkeypatch, 99)
    rc, out_text, err = run_cli(capsys, *build_argv(art, out, "--restart", "--json"))
    assert rc == 0, err
    assert json.loads(out_text)["resumed_after"] == 0
    assert [len(b) for b in asked] == [4, 4, 4, 2]  # everything encoded again
    assert contents(out) == reference


@pytest.mark.slow  # a real process, whose two workers each import ONNX Runtime
def test_python_m_deploy_with_workers(art, tmp_path, reference):
    out = tmp_path / "index"
    argv = [str(a) for a in build_argv(art, out, "--workers", 2, "--json")]
    done = subprocess.run([sys.executable, "-m", "deploy", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == 14
    assert contents(out) == reference


def test_journal_round_trip(tmp_path):
    settings = {"codes": "fp+float", "bits": 32, "source": {"images": "/x"}}
    journal = Journal.open(tmp_path / "idx", settings)
    packed = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.uint8)
    journal.append(["a", "b"], [{"path": "/x/a"}, {}], packed)
    again = Journal.open(tmp_path / "idx", settings)
    assert again.done == {"a", "b"} and again.n_codes == 2
    staged = again.read()
    assert staged.packed.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert staged.ids == ["a", "b"] and staged.metadata == [{"path": "/x/a"}, {}]
    with pytest.raises(StagingError, match="other codes"):
        Journal.open(tmp_path / "idx", {**settings, "codes": "other+float"})


def test_an_older_journals_failure_lines_are_not_done(tmp_path):
    # Before failures were retried, a journal recorded them as done; such a line is
    # ignored now, so the file is tried again.
    settings = {"codes": "fp", "bits": 32, "source": {}}
    journal = Journal.open(tmp_path / "idx", settings)
    journal.append(["a"], [{}], np.array([[1, 2, 3, 4]], np.uint8))
    with open(staging_path(tmp_path / "idx") / "journal.jsonl", "a") as f:
        f.write('{"id": "c", "failed": "/x/c", "error": "/x/c: bad"}\n')
    again = Journal.open(tmp_path / "idx", settings)
    assert again.done == {"a"} and again.n_codes == 1
    again.append(["c"], [{}], np.array([[5, 6, 7, 8]], np.uint8))
    staged = Journal.open(tmp_path / "idx", settings).read()
    assert staged.ids == ["a", "c"] and staged.packed.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_journal_refuses_a_line_that_is_not_json(tmp_path):
    settings = {"codes": "fp", "bits": 32, "source": {}}
    Journal.open(tmp_path / "idx", settings)
    (staging_path(tmp_path / "idx") / "journal.jsonl").write_text("not json\n")
    with pytest.raises(StagingError, match="journal.jsonl line 1 is not a journal entry"):
        Journal.open(tmp_path / "idx", settings)


def test_lazy_folder_walk_keeps_the_sorted_path_order(tmp_path):
    # "a/b.png" sorts before "a0.png" ("/" < "0") but after "a.png" and "a-x.png".
    for name in ["a0.png", "a/b.png", "a.png", "a-x.png", "a/c/d.png", "a/c.png", "b.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    ids = [item.id for item in sources.iter_folder_items(tmp_path)]
    assert ids == ["a-x.png", "a.png", "a/b.png", "a/c.png", "a/c/d.png", "a0.png"]
    assert ids == sorted(ids)
    assert [i.id for i in sources.folder_items(tmp_path)] == ids


def test_encode_batches_refuses_bad_counts(art):
    with pytest.raises(ValueError, match="must be >= 1"):
        next(parallel_encode.encode_batches(art["dir"] / "encoder.onnx", [], workers=0))


@pytest.fixture
def png_folder(art, tmp_path):
    """The 14 train PNGs in a folder (ids: their file names) and its clean build."""
    images = tmp_path / "images"
    images.mkdir()
    for path, split in zip(art["paths"], art["split"], strict=True):
        if split == "train":
            shutil.copy(path, images / Path(path).name)
    return images


def folder_argv(art, images, out, *more):
    return ["index", "build", "--encoder", art["dir"] / "encoder.onnx", "--images", images,
            "--out", out, "--batch-size", BATCH, "--no-progress", "--json", *more]  # fmt: skip


@pytest.mark.parametrize("rerun", ["repaired", "removed", "skip-bad"])
def test_a_build_failed_by_a_bad_file_keeps_its_journal_and_retries_only_that_file(
    art, png_folder, tmp_path, capsys, monkeypatch, rerun
):
    rc, _, err = run_cli(capsys, *folder_argv(art, png_folder, tmp_path / "ref"))
    assert rc == 0, err
    reference = contents(tmp_path / "ref")
    ref_ids = reference[1]
    bad = png_folder / ref_ids[5]
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a damaged PNG: cut in half
    out, staging = tmp_path / "index", staging_path(tmp_path / "index")
    asked = interrupt_after(monkeypatch, 99)

    rc, stdout, err = run_cli(capsys, *folder_argv(art, png_folder, out))
    assert rc == 1 and stdout == "" and not out.exists()
    assert (
        f"cannot read 1 bad file(s):\n  cannot read image {bad}: image file is truncated\n" in err
    )
    assert (
        f"error: 1 of 14 images could not be read (listed above), e.g. cannot read image "
        f"{bad}: image file is truncated; no index was written; the 13 encoded images are "
        f"kept in {staging}: repair or remove the bad files and rerun this command to "
        "encode only them (--skip-bad indexes the others)\n"
    ) in err
    # The journal holds the 13 images that encoded, the bad one is not done.
    journal = [json.loads(line)["id"] for line in (staging / "journal.jsonl").open()]
    assert journal == ref_ids[:5] + ref_ids[6:]
    assert (staging / "codes.bin").stat().st_size == 13 * 8

    asked.clear()
    more = []
    if rerun == "repaired":
        bad.write_bytes(good)
    elif rerun == "removed":
        bad.unlink()
    else:
        more = ["--skip-bad"]
    rc, stdout, err = run_cli(capsys, *folder_argv(art, png_folder, out, *more))
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["resumed_after"] == 13  # nothing the journal held was encoded again
    assert asked == ([] if rerun == "removed" else [[bad.name]])
    assert not staging.exists()
    if rerun == "repaired":  # the retried file takes its place in source order
        assert summary["indexed"] == 14 and summary["skipped"] == []
        assert contents(out) == reference
        return
    skipped = [] if rerun == "removed" else [
        {"path": str(bad), "error": f"cannot read image {bad}: image file is truncated"}
    ]  # fmt: skip
    assert summary["indexed"] == 13 and summary["skipped"] == skipped
    assert_reference_without(out, tmp_path / "ref", bad.name)


def assert_reference_without(index: Path, reference: Path, left_out: str) -> None:
    """``index`` holds the entries of ``reference`` but ``left_out``, in its order."""
    loaded, ref = HammingIndex.load(index), HammingIndex.load(reference)
    others = [n for n, i in enumerate(ref.ids) if i != left_out]
    assert loaded.ids == [ref.ids[n] for n in others]
    np.testing.assert_array_equal(loaded.packed_codes(range(len(loaded))), ref.packed_codes(others))
    ref_metadata = [m for _i, m in ref.entries()]
    assert [m for _i, m in loaded.entries()] == [ref_metadata[n] for n in others]


def test_a_file_removed_after_an_interruption_is_not_published(
    art, png_folder, tmp_path, capsys, monkeypatch
):
    rc, _, err = run_cli(capsys, *folder_argv(art, png_folder, tmp_path / "ref"))
    assert rc == 0, err
    ref_ids = contents(tmp_path / "ref")[1]
    out = tmp_path / "index"
    interrupt_after(monkeypatch, 1)
    assert run_cli(capsys, *folder_argv(art, png_folder, out))[0] == 130
    (png_folder / ref_ids[1]).unlink()  # journalled in the first batch, then removed
    asked = interrupt_after(monkeypatch, 99)
    rc, stdout, err = run_cli(capsys, *folder_argv(art, png_folder, out))
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["resumed_after"] == 4 and summary["indexed"] == 13
    assert [i for batch in asked for i in batch] == ref_ids[4:]
    assert_reference_without(out, tmp_path / "ref", ref_ids[1])
