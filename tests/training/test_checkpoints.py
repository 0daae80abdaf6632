"""Checkpoints: atomic writes, random states restored exactly, clear errors for missing or foreign files."""

import os
import random

import numpy as np
import pytest
import torch

from mrcnn_course.training.checkpoints import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_restores_every_generator():
    seed_everything(5)
    state = rng_state()
    first = draws()
    assert draws() != first  # the generators moved on
    set_rng_state(state)
    assert draws() == first


def test_seed_everything_is_repeatable():
    seed_everything(11)
    first = draws()
    seed_everything(11)
    assert draws() == first


def test_save_and_load_round_trip(tmp_path):
    checkpoint = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "rng": [rng_state()]}
    path = save_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, checkpoint)
    loaded = load_checkpoint(tmp_path / "run")  # the folder works too
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert torch.equal(loaded["rng"][0]["torch"], checkpoint["rng"][0]["torch"])
    assert os.listdir(path.parent) == [CHECKPOINT_NAME]  # no temporary file left behind


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_checkpoint(path, {"epoch": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
