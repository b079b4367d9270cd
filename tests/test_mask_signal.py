"""The mask signal: masks-only leave-one-out retrieval against its chance level."""

from __future__ import annotations

import numpy as np
import pytest

from keras_ynet.dataset import load_dataset
from keras_ynet.mask_signal import (
    LOW_SKILL,
    MaskSignal,
    leave_one_out_signal,
    main,
    mask_descriptor,
    mask_signal,
)
from keras_ynet.phantoms import make_phantoms


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
    assert "--coupling fixed --coupling-weights 1 0" in weak.summary()
    assert "--coupling" not in weak.summary(advise=False)
    assert "--coupling" not in strong.summary()
    assert weak.as_dict() == {"map@10": 0.212, "chance": 0.192, "skill": 0.0248, "n_images": 223}


def test_phantom_masks_carry_their_label(tmp_path):
    # The phantoms' glaucoma class has a larger cup: the masks alone separate the classes.
    make_phantoms(tmp_path, n_per_class=24, image_size=64, seed=0)
    spec = load_dataset(tmp_path)
    train = spec.split("train")
    signal = mask_signal(spec, train)
    assert signal.n_images == sum(r.mask is not None for r in train)
    assert signal.map > signal.chance + 0.2
    assert mask_signal(spec, train[:2]) is None  # too few images to rank


def test_command_line_prints_each_dataset_and_names_a_bad_folder(tmp_path, capsys):
    make_phantoms(tmp_path / "ph", n_per_class=24, image_size=64, seed=0)
    assert main([str(tmp_path / "ph")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "phantoms-fundus: mask signal: the masks alone retrieve same-label train images"
    )
    assert main([str(tmp_path / "ph"), str(tmp_path / "missing")]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err
