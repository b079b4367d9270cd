"""Nothing lost, no one in: concurrent writers, symbolic links, inputs, modes, crashes, Annoy.

The command-line cases use the hand-made 8x8-pixel ONNX encoder of
``test_bad_input_corpus`` (no TensorFlow, no export) and 16x16 PNGs; the concurrency case
runs two real ``deploy`` processes.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from index_files import edit_items, read_ids
from test_bad_input_corpus import make_encoder, write_png

from deploy import atomic
from deploy import cli as deploy_cli
from deploy.index import HammingIndex
from deploy.report_render import _png64, load_tile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return make_encoder(tmp_path_factory.mktemp("encoder") / "art")


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    """Ten distinct 16x16 grey PNGs."""
    folder = tmp_path_factory.mktemp("pngs")
    return [write_png(folder / f"p{i}.png", seed=200 + i) for i in range(10)]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = deploy_cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def build(capsys, encoder, out: Path, images: list[Path], *more) -> Path:
    folder = out.parent / f"{out.name}-images"
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder / path.name)
    rc, _, err = cli(capsys, "index", "build", "--encoder", encoder, "--images", folder,
                     "--out", out, *more)  # fmt: skip
    assert rc == 0, err
    return folder


def ids_of(folder: Path) -> list:
    return read_ids(folder)


# 1. Concurrent writers --------------------------------------------------------------------

# Runs deploy's command line in a real process. Its encoder waits (at most 3 s) until the
# other process has reached its encoder too: without a lock both have then read the index
# before either saves, which is the lost update made certain instead of likely. With the
# lock the second process is still waiting for the lock, so the first one goes on after 3 s.
MEET = r"""
import sys, time
from pathlib import Path
import deploy.cli
from deploy.encoder import Encoder

me, other = Path(sys.argv[1]), Path(sys.argv[2])
encode_files = Encoder.encode_files

def meet_then_encode(self, *args, **kwargs):
    me.touch()
    deadline = time.monotonic() + 3
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return encode_files(self, *args, **kwargs)

Encoder.encode_files = meet_then_encode
sys.exit(deploy.cli.main(sys.argv[3:]))
"""


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_two_concurrent_index_add_processes_lose_nothing(encoder, pngs, tmp_path, capsys):
    idx = tmp_path / "idx"
    build(capsys, encoder, idx, pngs[:4])
    before = ids_of(idx)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    adds = {"a": pngs[4:6], "b": pngs[6:8]}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                MEET,
                tmp_path / f"at-{name}",
                tmp_path / f"at-{other}",
                "index",
                "add",
                "--index",
                idx,
                "--encoder",
                encoder,
                *files,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for (name, files), other in zip(adds.items(), ["b", "a"], strict=True)
    }
    results = {name: p.communicate(timeout=120) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, results[name][1]
    after = ids_of(idx)
    added = [str(p) for p in pngs[4:8]]
    assert len(after) == 4 + 4
    assert after[:4] == before and sorted(after[4:]) == sorted(added)
    assert len(HammingIndex.load(idx)) == 8
    # The second writer waited for the first one and said so; no lock file is left.
    waited = [name for name, (_, err) in results.items() if "waiting for process" in err]
    assert len(waited) == 1
    assert sorted(os.listdir(tmp_path)) == ["at-a", "at-b", "idx", "idx-images"]


HOLD = r"""
import sys
from deploy import atomic
with atomic.writer_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held_by_another_process(index):
    """Yields the process that holds ``index``'s writer lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(index)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.communicate("", timeout=30)


def test_index_add_waits_for_the_lock_and_gives_up_after_lock_timeout(
    encoder, pngs, tmp_path, capsys
):
    idx = tmp_path / "idx"
    build(capsys, encoder, idx, pngs[:2])
    with lock_held_by_another_process(idx) as holder:
        rc, _, err = cli(capsys, "index", "add", "--index", idx, "--encoder", encoder,
                         "--lock-timeout", "0.3", pngs[2])  # fmt: skip
    assert rc == 1
    assert err.splitlines() == [
        f"waiting for process {holder.pid}, which is writing {idx}",
        f"error: {idx} is being written by process {holder.pid} (lock {tmp_path / '.idx.lock'}); "
        "gave up waiting after 0.3 s: try again later or wait longer",
    ]
    assert len(ids_of(idx)) == 2
    # The holder is gone: the lock is free again, and its file was deleted.
    rc, _, err = cli(capsys, "index", "add", "--index", idx, "--encoder", encoder, pngs[2])
    assert rc == 0, err
    assert len(ids_of(idx)) == 3 and sorted(os.listdir(tmp_path)) == ["idx", "idx-images"]


# 2. A symbolic link to the index ------------------------------------------------------------


def test_add_through_a_symlink_updates_the_target_and_keeps_the_link(
    encoder, pngs, tmp_path, capsys
):
    build(capsys, encoder, tmp_path / "index-v7", pngs[:3])
    (tmp_path / "current").symlink_to("index-v7")
    for png in pngs[3:5]:
        rc, _, err = cli(capsys, "index", "add", "--index", tmp_path / "current",
                         "--encoder", encoder, png)  # fmt: skip
        assert rc == 0 and err == "", err
    assert (tmp_path / "current").is_symlink()
    assert os.readlink(tmp_path / "current") == "index-v7"
    assert len(ids_of(tmp_path / "index-v7")) == 5
    assert ids_of(tmp_path / "index-v7")[3:] == [str(pngs[3]), str(pngs[4])]
    assert sorted(os.listdir(tmp_path)) == ["current", "index-v7", "index-v7-images"]


# 3. Outputs never replace inputs ------------------------------------------------------------


def test_search_report_never_overwrites_the_query_an_indexed_image_or_a_file(
    encoder, pngs, tmp_path, capsys
):
    images = build(capsys, encoder, tmp_path / "idx", pngs[:3])
    query = tmp_path / "scan.png"
    shutil.copy(pngs[5], query)
    original = query.read_bytes()
    search = ["search", "--index", tmp_path / "idx", "--encoder", encoder, "--image", query,
              "-k", 2]  # fmt: skip
    # The default sheet of scan.html is scan.png, the query itself.
    rc, _, err = cli(capsys, *search, "--report", tmp_path / "scan.html", "--overwrite")
    assert rc == 1
    assert err == (
        f"error: the contact sheet {query} would replace the query image {query}; "
        "choose another --sheet path\n"
    )
    assert query.read_bytes() == original and not (tmp_path / "scan.html").exists()
    indexed = images / pngs[0].name
    indexed_bytes = indexed.read_bytes()
    rc, _, err = cli(capsys, *search, "--report", tmp_path / "r.html", "--sheet", indexed,
                     "--overwrite")  # fmt: skip
    assert rc == 1 and f"would replace an indexed image {indexed};" in err
    assert indexed.read_bytes() == indexed_bytes and not (tmp_path / "r.html").exists()
    # An existing file needs --overwrite.
    (tmp_path / "why.html").write_text("keep me")
    rc, _, err = cli(capsys, *search, "--report", tmp_path / "why.html")
    assert rc == 1
    assert err == (
        f"error: {tmp_path / 'why.html'} exists and would be replaced by the report; add "
        "--overwrite to replace it, or choose another --report path\n"
    )
    assert (tmp_path / "why.html").read_text() == "keep me"
    assert not (tmp_path / "why.png").exists()
    rc, out, err = cli(capsys, *search, "--report", tmp_path / "why.html", "--overwrite")
    assert rc == 0, err
    assert (tmp_path / "why.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "why.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_path_without_overwrite_keeps_a_file_created_meanwhile(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(FileExistsError, match="out.png exists; it was not replaced"):  # noqa: PT012
        with atomic.atomic_path(target, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
            target.write_bytes(b"theirs")  # appears while the new file is being written
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.png"]
    with atomic.atomic_path(tmp_path / "fresh.png", overwrite=False) as tmp:
        tmp.write_bytes(b"new")
    assert (tmp_path / "fresh.png").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["fresh.png", "out.png"]


# 4. Modes follow the umask ------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# Saves an Annoy index twice (a new folder, then a replacement) and writes a file, in a
# process started with the umask under test (the umask is read once per process).
SAVE = r"""
import sys
import numpy as np
from deploy import atomic
from deploy.index import HammingIndex
from deploy.report_render import _png64, load_tile
index = HammingIndex(bits=64, fingerprint="enc-1", backend="annoy", n_trees=2)
index.batch_add(np.random.default_rng(0).integers(0, 2, (20, 64), dtype=np.uint8), range(20))
index.build()
index.save(sys.argv[1] + "/idx")
index.save(sys.argv[1] + "/idx")
atomic.atomic_write_text(sys.argv[1] + "/run.json", "{}")
"""


@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644),
                                                               (0o077, 0o700, 0o600)])  # fmt: skip
def test_saved_files_and_folders_get_the_umask_modes(tmp_path, umask, dir_mode, file_mode):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SAVE, str(tmp_path)], cwd=REPO, env=env,
                          umask=umask, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "idx") == dir_mode
    files = sorted(os.listdir(tmp_path / "idx"))
    assert files == ["codes.npy", "index.ann", "index.json", "items.jsonl", "items_offsets.npy"]
    assert [mode(tmp_path / "idx" / name) for name in files] == [file_mode] * 5
    assert mode(tmp_path / "run.json") == file_mode
    assert sorted(os.listdir(tmp_path)) == ["idx", "run.json"]


# 5. A crash between the two renames, then index build ----------------------------------------


def test_build_after_a_crashed_swap_recovers_first_and_refuses(encoder, pngs, tmp_path, capsys):
    idx = tmp_path / "idx"
    build(capsys, encoder, idx, pngs[:3])
    before = ids_of(idx)
    os.rename(idx, tmp_path / ".idx.backup")  # the state a crash between the renames leaves
    (tmp_path / ".idx.tmp-ab12cd34").mkdir()  # and a write killed halfway
    (tmp_path / ".idx.tmp-ab12cd34" / "codes.npy").write_bytes(b"half")
    others = tmp_path / "others"
    others.mkdir()
    shutil.copy(pngs[6], others / "new.png")
    argv = ["index", "build", "--encoder", encoder, "--images", others, "--out", idx]
    rc, _, err = cli(capsys, *argv)
    assert rc == 1
    assert err == f"error: {idx} already holds an index; add --overwrite to replace it\n"
    assert ids_of(idx) == before
    assert sorted(os.listdir(tmp_path)) == ["idx", "idx-images", "others"]
    rc, _, err = cli(capsys, *argv, "--overwrite")
    assert rc == 0, err
    assert ids_of(idx) == ["new.png"]
    assert sorted(os.listdir(tmp_path)) == ["idx", "idx-images", "others"]


# 6. A damaged Annoy file of the right size ---------------------------------------------------

LOAD = r"""
import sys
from deploy.index import HammingIndex
from deploy.report_render import _png64, load_tile
try:
    HammingIndex.load(sys.argv[1])
except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
"""


def test_flipped_byte_in_index_ann_is_an_error_not_a_crash(tmp_path):
    index = HammingIndex(bits=64, fingerprint="enc-1", backend="annoy", n_trees=3)
    index.batch_add(np.random.default_rng(1).integers(0, 2, (50, 64), dtype=np.uint8), range(50))
    index.build()
    index.save(tmp_path / "idx")
    ann = tmp_path / "idx" / "index.ann"
    data = bytearray(ann.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ann.write_bytes(bytes(data))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "idx")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"error: Annoy file {ann} is corrupted: its sha256 differs from the sidecar's\n"
    )
    # A sidecar from before the checksum was recorded: refused before Annoy reads the file.
    sidecar = json.loads((tmp_path / "idx" / "index.json").read_text())
    del sidecar["annoy_sha256"]
    (tmp_path / "idx" / "index.json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=r"records no sha256 of index\.ann.*rebuild the index"):
        HammingIndex.load(tmp_path / "idx")


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_explain_never_overwrites_the_query_a_dataset_image_or_a_file(tmp_path, capsys):
    import keras
    from conftest import TINY
    from test_bad_input_corpus import write_dataset

    from keras_ynet import explain
    from keras_ynet.model import YNet
    from keras_ynet.saving import save_ynet

    data = write_dataset(tmp_path / "data")
    keras.utils.set_random_seed(0)
    save_ynet(YNet(**TINY, bits=64, class_names=["sick", "well"]), tmp_path / "model.keras")
    query = tmp_path / "scan.png"
    write_png(query, seed=9)
    inputs = {p: p.read_bytes() for p in [query, *sorted((data / "images").iterdir())]}
    base = ["--model", tmp_path / "model.keras", "--data", data, "--image", query, "-k", 1]

    def run(*more):
        rc = explain.main([str(a) for a in [*base, *more]])
        return rc, capsys.readouterr().err.splitlines()[-1]

    rc, err = run("--out", tmp_path / "scan.html", "--overwrite")
    assert (rc, err) == (1, f"error: the contact sheet {query} would replace the query image "
                            f"{query}; choose another --sheet path")  # fmt: skip
    rc, err = run("--out", data / "images" / "a.png", "--sheet", tmp_path / "s.png")
    assert (rc, err) == (1, f"error: the report {data / 'images' / 'a.png'} would replace a "
                            f"dataset image {data / 'images' / 'a.png'}; choose another --out "
                            "path")  # fmt: skip
    (tmp_path / "why.html").write_text("keep me")
    rc, err = run("--out", tmp_path / "why.html")
    assert (rc, err) == (1, f"error: {tmp_path / 'why.html'} exists and would be replaced by "
                            "the report; add --overwrite to replace it, or choose another "
                            "--out path")  # fmt: skip
    assert (tmp_path / "why.html").read_text() == "keep me"
    assert {p: p.read_bytes() for p in inputs} == inputs
    assert sorted(os.listdir(tmp_path)) == ["data", "model.keras", "scan.png", "why.html"]
    assert run("--out", tmp_path / "why.html", "--overwrite")[0] == 0
    assert (tmp_path / "why.html").read_text().startswith("<!DOCTYPE html>")


# 6. Files from outside the dataset ----------------------------------------------------------


def outside_dataset(tmp_path, pngs, image: str) -> Path:
    """A dataset folder with one good row and one row whose image is ``image``."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    shutil.copy(pngs[0], root / "images" / "a.png")
    (tmp_path / "private.png").write_bytes(pngs[1].read_bytes())
    (root / "images" / "link.png").symlink_to(tmp_path / "private.png")
    rows = ["id,image,label,split", "a,images/a.png,x,train", f"b,{image},x,train"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("image", ["ABSOLUTE", "../private.png", "images/link.png"])
def test_dataset_rows_leaving_the_folder_are_refused_unless_allowed(
    encoder, pngs, tmp_path, capsys, image
):
    image = str(tmp_path / "private.png") if image == "ABSOLUTE" else image
    root = outside_dataset(tmp_path, pngs, image)
    build = ["index", "build", "--encoder", encoder, "--data", root]
    rc, out, err = cli(capsys, *build, "--out", tmp_path / "i1")
    assert rc == 1 and out == ""
    assert err == (
        f"error: {root / 'labels.csv'} line 3: {image!r} is outside {root} (absolute, '..' or "
        "a symbolic link leaving it); refused unless dataset.json has "
        '"allow_outside_paths": true or --allow-outside-paths is given\n'
    )
    assert not (tmp_path / "i1").exists()
    rc, _, err = cli(capsys, *build, "--out", tmp_path / "i2", "--allow-outside-paths")
    assert rc == 0, err
    assert ids_of(tmp_path / "i2") == ["a", "b"]
    (root / "dataset.json").write_text('{"allow_outside_paths": true}')
    rc, _, err = cli(capsys, *build, "--out", tmp_path / "i3")
    assert rc == 0, err


def test_image_folder_link_leaving_it_is_refused_unless_allowed(encoder, pngs, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(pngs[0], folder / "a.png")
    (folder / "z.png").symlink_to(pngs[1])
    build = ["index", "build", "--encoder", encoder, "--images", folder]
    rc, _, err = cli(capsys, *build, "--out", tmp_path / "i1")
    assert rc == 1
    assert err == (
        f"error: --images: 'z.png' is outside {folder} (absolute, '..' or a symbolic link "
        "leaving it); refused unless --allow-outside-paths is given\n"
    )
    rc, _, err = cli(capsys, *build, "--out", tmp_path / "i2", "--allow-outside-paths")
    assert rc == 0 and ids_of(tmp_path / "i2") == ["a.png", "z.png"]


def test_report_never_shows_a_file_an_edited_index_points_to(encoder, pngs, tmp_path, capsys):
    images = build(capsys, encoder, tmp_path / "idx", pngs[:3])
    private = tmp_path / "private.png"
    shutil.copy(pngs[7], private)
    # The codes are untouched.
    edit_items(
        tmp_path / "idx", lambda ids, meta: meta[ids.index("p1.png")].update(path=str(private))
    )
    report = tmp_path / "why.html"
    rc, _, err = cli(capsys, "search", "--index", tmp_path / "idx", "--encoder", encoder,
                     "--image", images / "p0.png", "-k", 3, "--report", report)  # fmt: skip
    assert rc == 0, err
    page = html.unescape(report.read_text())
    assert page.count("image not shown") == 1
    assert (
        f"image not shown: {private} does not encode to the indexed code of 'p1.png' (changed "
        "since it was indexed, or not the indexed image); not shown" in page
    )
    assert _png64(load_tile(private)[0]) not in page  # the private image is not inlined
    assert _png64(load_tile(images / "p2.png")[0]) in page  # an indexed one is


# 7. Names from files, the same file twice, bounds -------------------------------------------


def test_ids_labels_and_paths_are_printed_escaped(encoder, pngs, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(pngs[0], root / "a.png")
    (root / "labels.csv").write_text(
        'id,image,label,split\n"a\x1b[2J\x1b[31mX",a.png,"l\x07\nfake row",train\n'
    )
    rc, _, err = cli(capsys, "index", "build", "--encoder", encoder, "--data", root, "--out",
                     tmp_path / "idx")  # fmt: skip
    assert rc == 0, err
    rc, out, err = cli(capsys, "search", "--index", tmp_path / "idx", "--encoder", encoder,
                       "--image", pngs[0])  # fmt: skip
    assert rc == 0, err
    assert re.split(r"\s{2,}", out.splitlines()[1])[:4] == [
        "1",
        "a\\x1b[2J\\x1b[31mX",
        "0",
        "l\\x07\\nfake row",
    ]
    assert "\x1b" not in out and "\x07" not in out and len(out.splitlines()) == 2


def test_newline_in_a_file_name_does_not_break_the_report(encoder, pngs, tmp_path, capsys):
    folder = build(capsys, encoder, tmp_path / "idx", pngs[:2])
    odd = folder / "two\nlines.png"
    os.rename(folder / pngs[1].name, odd)
    (tmp_path / "idx").rename(tmp_path / "old")  # re-index with the odd name
    rc, _, err = cli(capsys, "index", "build", "--encoder", encoder, "--images", folder,
                     "--out", tmp_path / "idx")  # fmt: skip
    assert rc == 0, err
    rc, out, err = cli(capsys, "search", "--index", tmp_path / "idx", "--encoder", encoder,
                       "--image", odd, "--report", tmp_path / "why.html")  # fmt: skip
    assert rc == 0, err
    assert "two\\nlines.png" in out.splitlines()[1]
    assert out.splitlines()[-1] == f"wrote {tmp_path / 'why.html'} and {tmp_path / 'why.png'}"
    assert (tmp_path / "why.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_file_under_two_ids_is_refused(encoder, pngs, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(pngs[0], folder / "a.png")
    shutil.copy(pngs[1], folder / "b.png")
    os.link(folder / "a.png", folder / "c.png")  # a hard link: one file, two names
    rc, _, err = cli(capsys, "index", "build", "--encoder", encoder, "--images", folder,
                     "--out", tmp_path / "idx")  # fmt: skip
    assert rc == 1 and err == (
        f"error: ids 'a.png' and 'c.png' are the same file ({folder / 'c.png'}): an image is "
        "indexed once; remove one of them\n"
    )
    (folder / "c.png").unlink()
    rc, _, err = cli(capsys, "index", "build", "--encoder", encoder, "--images", folder,
                     "--out", tmp_path / "idx")  # fmt: skip
    assert rc == 0, err
    link = tmp_path / "link.png"
    link.symlink_to(folder / "b.png")
    rc, _, err = cli(capsys, "index", "add", "--index", tmp_path / "idx", "--encoder", encoder,
                     link)  # fmt: skip
    assert rc == 1 and err == (
        f"error: ids 'b.png' and '{link}' are the same file ({link}): an image is indexed "
        "once; remove one of them\n"
    )
    assert ids_of(tmp_path / "idx") == ["a.png", "b.png"]


def test_threads_beyond_the_cpus_is_a_usage_error(encoder, pngs, tmp_path, capsys):
    cpus = deploy_cli.usable_cpus()
    with pytest.raises(SystemExit) as done:
        deploy_cli.main(["search", "--index", str(tmp_path), "--encoder", str(encoder),
                         "--image", str(pngs[0]), "--threads", str(cpus + 1)])  # fmt: skip
    assert done.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(
            f"error: --threads {cpus + 1} is more than the {cpus} CPU(s) this process may use"
        )
    )


def test_huge_k_and_search_k_on_annoy_return_everything(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, (40, 64), dtype=np.uint8)
    for search_k in (-1, 10**30):
        index = HammingIndex(bits=64, fingerprint="f", backend="annoy", search_k=search_k)
        index.batch_add(codes, list(range(40)))
        index.build()
        index.save(tmp_path / f"i{search_k}")
        loaded = HammingIndex.load(tmp_path / f"i{search_k}")
        for k in (2**31, 10**12):
            hits = loaded.lookup(codes[3], k=k)
            assert len(hits) == 40 and (hits[0].id, hits[0].distance) == (3, 0)


def test_outputs_under_a_file_and_bad_sidecar_paths_are_named(encoder, pngs, tmp_path, capsys):
    images = build(capsys, encoder, tmp_path / "idx", pngs[:2])
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli(capsys, "index", "build", "--encoder", encoder, "--images", images,
                     "--out", tmp_path / "afile" / "sub" / "idx")  # fmt: skip
    assert rc == 1 and err == (
        f"error: --out {tmp_path / 'afile' / 'sub' / 'idx'}: cannot create the folder "
        f"{tmp_path / 'afile' / 'sub'}: a part of it is a file\n"
    )
    search = ["search", "--index", tmp_path / "idx", "--encoder", encoder, "--image", pngs[0]]
    rc, _, err = cli(capsys, *search, "--report", tmp_path / "afile" / "r.html")
    assert rc == 1 and err == (
        f"error: --report {tmp_path / 'afile' / 'r.html'}: cannot create the folder "
        f"{tmp_path / 'afile'}: a part of it is a file\n"
    )
    edit_items(tmp_path / "idx", lambda ids, meta: meta[1].update(path=["not", "a", "path"]))
    rc, _, err = cli(capsys, *search)
    assert rc == 1 and err == (
        f"error: items file {tmp_path / 'idx' / 'items.jsonl'} is corrupted at item 1 (line 2): "
        f"metadata 'path' of item 1 ({read_ids(tmp_path / 'idx')[1]!r}) is ['not', 'a', 'path'], "
        "not text\n"
    )
