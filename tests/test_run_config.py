"""RunConfig is the one declaration of run settings: both CLIs are built from it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keras_ynet import train
from keras_ynet.experiments import cli as experiments_cli
from keras_ynet.run_config import RunConfig


def flags_of(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_every_setting_is_a_flag_of_both_commands(monkeypatch):
    seen = {}

    def capture(self, args=None, namespace=None):
        seen[self.prog] = flags_of(self)
        raise SystemExit(0)

    monkeypatch.setattr("argparse.ArgumentParser.parse_args", capture)
    for parse in (train.parse_args, lambda: experiments_cli.parse_args(["table2"])):
        with pytest.raises(SystemExit):
            parse()
    names = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(RunConfig)}
    assert names <= seen["python -m keras_ynet.train"]
    per_run = {"--data", "--out", "--seed"}  # experiments sets these for each run
    assert names - per_run <= seen["python -m keras_ynet.experiments"]


def test_given_flags_win_and_the_rest_are_defaults():
    config, flags = train.parse_args(
        ["--data", "d", "--stage-widths", "4", "4", "4", "16", "--coupling-weights", "1", "2",
         "--augment", "--train-steps", "300", "--hash-head", "guided"]
    )  # fmt: skip
    expected = RunConfig(
        data="d", out=f"runs/d-{RunConfig.variant}", stage_widths=(4, 4, 4, 16),
        coupling_weights=(1.0, 2.0), augment=True, train_steps=300, hash_head="guided",
    )  # fmt: skip
    assert config == expected and flags.debug is False and flags.json is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image-size", "100"], "--image-size must be a positive multiple of 32"),
        (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1)"),
        (["--stage-blocks", "1", "1"], "--stage-widths and --stage-blocks need the same number"),
        (["--hash-head", "nope"], "invalid choice: 'nope'"),
        (
            ["--circle-margin", "1.2"],
            "--circle-margin in [0, 1) (cosine similarities), got 32.0 and 1.2",
        ),
        (["--circle-gamma", "0"], "--circle-gamma must be > 0"),
    ],
)
def test_bad_settings_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        train.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_config_json_loads_back_without_its_dataset_record(tmp_path):
    config = RunConfig(data="d", stage_widths=(4, 8), stage_blocks=(1, 1), augment=True)
    record = {**dataclasses.asdict(config), "dataset": {"name": "d", "n_train": 3}}
    (tmp_path / "run_config.json").write_text(json.dumps(record))
    assert RunConfig.load(tmp_path / "run_config.json") == config
    (tmp_path / "bad.json").write_text(json.dumps({**record, "colour": "red"}))
    with pytest.raises(ValueError, match=r"bad.json: cannot read run config: unknown run "):
        RunConfig.load(tmp_path / "bad.json")
