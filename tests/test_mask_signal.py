"""The mask signal: masks-only leave-one-out retrieval against its chance level."""

from __future__ import annotations

import numpy as np
import pytest

from keras_ynet.dataset import load_dataset
from keras_ynet.mask_signal import (
    LOW_SKILL,
    MaskSignal,
    decide_seg_guidance,
    guidance_line,
    leave_one_out_signal,
    main,
    mask_descriptor,
    mask_signal,
    resolve_seg_guidance,
)
from keras_ynet.phantoms import make_phantoms
from keras_ynet.run_config import RunConfig


def test_descriptor_is_the_share_of_each_cell_per_class():
    mask = np.zeros((32, 32), np.uint8)
    mask[:16, :16] = 1  # class 1 fills the top-left cell of a 2x2 grid
    mask[16:, 16:24] = 2  # class 2 fills half of the bottom-right cell
    got = mask_descriptor(mask, num_classes=3, grid=2)
    # class-major: class 1's four cells (row-major), then class 2's
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]


def test_descriptor_cells_split_a_size_that_does_not_divide():
    mask = np.zeros((5, 5), np.uint8)
    mask[0, :] = 1  # the first row: cells are rows 0-1 / 2-4 and columns 0-1 / 2-4
    got = mask_descriptor(mask, num_classes=2, grid=2)
    assert got.tolist() == [2 / 4, 3 / 6, 0.0, 0.0]
    with pytest.raises(ValueError, match="smaller than the 16x16 grid"):
        mask_descriptor(np.zeros((8, 40), np.uint8), num_classes=2)


def test_separating_masks_score_one_against_the_exact_chance():
    labels = np.array([0, 0, 0, 1, 1, 1])
    descriptors = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    score, chance = leave_one_out_signal(descriptors, labels, k=2)
    assert score == 1.0
    # Each query: 2 relevant among 5 others; E[P(1)rel(1)] = 2/5, E[P(2)rel(2)] =
    # (2/5 + 2*1/(5*4)) / 2 = 0.25, so chance = (0.4 + 0.25) / k = 0.325.
    assert chance == pytest.approx(0.325)


def test_fewer_images_than_k_rank_all_the_others():
    labels = np.array([0, 0, 1, 1])
    score, chance = leave_one_out_signal(np.array([[0.0], [0.1], [5.0], [5.1]]), labels, k=10)
    # k falls to the 3 others: the one relevant first, P = 1 at rank 1 only: AP = 1/3.
    assert score == pytest.approx(1 / 3)
    # chance: 1 relevant among 3 at random, sum_j E[P(j)rel(j)] = (1/3)(1 + 1/2 + 1/3) / 3
    assert chance == pytest.approx((1 / 3) * (1 + 1 / 2 + 1 / 3) / 3)


def test_a_mask_unrelated_to_the_label_ranks_the_wrong_neighbours_first():
    # Neighbours by descriptor always carry the other label: score 0.
    labels = np.array([0, 1, 0, 1, 0, 1])
    descriptors = np.array([[0.0], [0.1], [5.0], [5.1], [10.0], [10.1]])
    score, _ = leave_one_out_signal(descriptors, labels, k=1)
    assert score == 0.0


def test_skill_and_the_note_on_masks_that_say_little():
    strong = MaskSignal(map=0.776, chance=0.379, n_images=437)
    weak = MaskSignal(map=0.212, chance=0.192, n_images=223)
    assert strong.skill == pytest.approx((0.776 - 0.379) / (1 - 0.379))
    assert weak.skill == pytest.approx(0.02 / 0.808)
    assert not strong.low and weak.low and LOW_SKILL == 0.1
    assert weak.as_dict() == {"map@10": 0.212, "chance": 0.192, "skill": 0.0248, "n_images": 223}


def test_auto_turns_the_guidance_off_only_below_the_skill_threshold():
    strong = MaskSignal(map=0.776, chance=0.379, n_images=437)  # RIM-ONE DL's train split
    weak = MaskSignal(map=0.212, chance=0.192, n_images=223)  # JSRT's
    edge = MaskSignal(map=0.56, chance=0.5, n_images=100)  # skill 0.12: just above
    assert resolve_seg_guidance("auto", strong) == "on"
    assert resolve_seg_guidance("auto", weak) == "off"
    assert resolve_seg_guidance("auto", edge) == "on"
    assert resolve_seg_guidance("auto", None) == "on"  # nothing measured: the paper's way
    assert resolve_seg_guidance("on", weak) == "on"
    assert resolve_seg_guidance("off", strong) == "off"
    # Forced on over weak masks: the line names the way out; auto says what it chose.
    assert "--seg-guidance auto or off" in guidance_line("on", "on", weak)
    assert "--seg-guidance" not in guidance_line("on", "on", strong)
    assert "detached" in guidance_line("auto", "off", weak)
    assert guidance_line("auto", "on", strong).startswith("segmentation guidance: on (auto")


def test_phantom_masks_carry_their_label(tmp_path):
    # The phantoms' glaucoma class has a larger cup: the masks alone separate the classes.
    make_phantoms(tmp_path, n_per_class=24, image_size=64, seed=0)
    spec = load_dataset(tmp_path)
    train = spec.split("train")
    signal = mask_signal(spec, train)
    assert signal.n_images == sum(r.mask is not None for r in train)
    assert signal.map > signal.chance + 0.2
    assert mask_signal(spec, train[:2]) is None  # too few images to rank


def test_auto_decides_from_the_fit_records_of_the_run(tmp_path):
    make_phantoms(tmp_path / "ph", n_per_class=24, image_size=64, seed=0)
    spec = load_dataset(tmp_path / "ph")
    config = RunConfig(data=str(tmp_path / "ph"), seg_guidance="auto")
    guidance, signal = decide_seg_guidance(spec, config)
    assert guidance == "on" and not signal.low
    # The validation fold is left out: the signal counts the fit records only.
    n_train = sum(r.mask is not None for r in spec.split("train"))
    assert signal.n_images == n_train - round(0.1 * n_train)
    # Labels dealt out independently of the masks: auto keeps the masks off the encoder.
    lines = (tmp_path / "ph" / "labels.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    column = header.index("label")
    names = sorted({row[column] for row in rows})
    for i, row in enumerate(rows):
        row[column] = names[(i * 7 // 3) % len(names)]
    (tmp_path / "ph" / "labels.csv").write_text(
        "\n".join([lines[0], *(",".join(row) for row in rows)]) + "\n"
    )
    guidance, signal = decide_seg_guidance(load_dataset(tmp_path / "ph"), config)
    assert guidance == "off" and signal.low
    # no_fpn trains no segmentation: nothing to measure.
    no_fpn = RunConfig(data=str(tmp_path / "ph"), seg_guidance="auto", variant="no_fpn")
    assert decide_seg_guidance(spec, no_fpn) == ("on", None)


def test_command_line_prints_each_dataset_and_names_a_bad_folder(tmp_path, capsys):
    make_phantoms(tmp_path / "ph", n_per_class=24, image_size=64, seed=0)
    assert main([str(tmp_path / "ph")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "phantoms-fundus: mask signal: the masks alone retrieve same-label train images"
    )
    assert out.rstrip().endswith("--seg-guidance auto: on")
    assert main([str(tmp_path / "ph"), str(tmp_path / "missing")]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err
