"""Checkpoints: atomic writes, random states restored exactly, clear errors for missing or foreign files.
Also bad input: output folders that cannot be written or are full, damaged or foreign checkpoints, another thread count.
And one run per output folder: a second run into a busy folder is refused (a real training process holds it), and
a killed run's lock is not stuck.
"""

import io
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TWO_EPOCHS

from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import checkpoints, loop
from mrcnn_course.training.checkpoints import (
    CHECKPOINT_NAME,
    OutputFolderError,
    ResumeNotExact,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from mrcnn_course.training.loop import train
from mrcnn_course.training.training_trace import TrainingTrace

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: training runs on one thread


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


class RunsCode:
    """What a pickle that runs code looks like: unpickling calls `call(*arguments)`."""

    def __init__(self, call, *arguments):
        self.call, self.arguments = call, arguments

    def __reduce__(self):
        return self.call, self.arguments


def test_a_checkpoint_holds_only_what_a_safe_load_reads(finished_run):
    payload = (finished_run / CHECKPOINT_NAME).read_bytes().split(b"\n", 1)[1]
    checkpoint = torch.load(io.BytesIO(payload), weights_only=True)  # tensors, numbers, text, lists and dicts
    assert set(checkpoint) >= set(checkpoints.RESUMABLE_KEYS)
    seed_everything(3)
    set_rng_state(checkpoint["rng"][0])  # numpy's state, stored as its parts, restores numpy's generator
    first = draws()
    set_rng_state(checkpoint["rng"][0])
    assert draws() == first


@pytest.mark.parametrize("with_digest", [False, True])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, with_digest):
    marker = tmp_path / "code-ran"
    path = tmp_path / "my_checkpoint.pt"
    content = {"model": RunsCode(os.system, f"touch {marker}"), "epoch": RunsCode(exec, f"open({str(marker)!r}, 'w')")}
    if with_digest:  # a digest proves the bytes are whole, not that they are safe
        save_checkpoint(path, content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError) as refused:
        load_checkpoint(path)
    assert not marker.exists()
    assert str(refused.value).startswith(f"not a course checkpoint or state_dict: {path} holds a Python object (")
    assert "so it was not loaded" in str(refused.value)
    if not with_digest:  # the file is a real threat: an unsafe load runs its code
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_a_bare_state_dict_loads_and_an_older_format_says_so(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "weights.pt")
    assert torch.equal(load_checkpoint(tmp_path / "weights.pt")["w"], torch.arange(3.0))
    old = tmp_path / "old.pt"
    old.write_bytes(b"mrcnn_course checkpoint sha256=" + b"0" * 64 + b"\n" + b"payload")  # format 1's header
    with pytest.raises(ValueError, match=re.escape(f"{old} is a checkpoint of an older course version (format 1;")):
        load_checkpoint(old)
    newer = save_checkpoint(tmp_path / "newer.pt", {"epoch": 1})
    newer.write_bytes(newer.read_bytes().replace(b"format=2", b"format=3", 1))
    with pytest.raises(ValueError, match=r"of a newer course version \(format 3; .*: it was not loaded; update"):
        load_checkpoint(newer)


def test_an_output_folder_that_cannot_be_created_fails_before_the_first_step(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    steps = []
    with pytest.raises(OutputFolderError, match=re.escape(f"cannot write in the output folder {tmp_path}/a_file/run")):
        train(recipe=TWO_EPOCHS, out=tmp_path / "a_file" / "run", progress=False, on_step=steps.append)
    assert steps == []


def test_a_missing_output_folder_is_created_and_a_full_one_refused_before_the_first_step(tmp_path, monkeypatch):
    checkpoints.check_output_folder(tmp_path / "new" / "run", 1000)
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**6})())
    steps = []
    with pytest.raises(OutputFolderError, match=r"has 1 MB free, but a checkpoint needs about \d+ MB: free some"):
        train(recipe=TWO_EPOCHS, out=tmp_path / "full", progress=False, on_step=steps.append)
    assert steps == []


def test_a_disk_that_fills_up_while_saving_leaves_no_partial_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, {"epoch": 1})

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", full_disk)
    with pytest.raises(OutputFolderError, match=re.escape(f"cannot write {path} (No space left on device)")):
        save_checkpoint(path, {"epoch": 2})
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME] and load_checkpoint(path)["epoch"] == 1


def test_a_checkpoint_with_a_flipped_byte_is_refused(finished_run, tmp_path):
    damaged = tmp_path / CHECKPOINT_NAME
    content = bytearray((finished_run / CHECKPOINT_NAME).read_bytes())
    content[len(content) // 2] ^= 0x10
    damaged.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=re.escape(f"{damaged} is damaged: its bytes do not match the digest")):
        load_checkpoint(damaged)
    damaged.write_bytes(bytes(content[: len(content) // 2]))  # a copy cut short
    with pytest.raises(ValueError, match="is damaged"):
        load_checkpoint(damaged)


def test_a_bare_state_dict_or_one_without_optimizer_cannot_be_resumed(finished_run, tmp_path):
    checkpoint = load_checkpoint(finished_run)
    torch.save(checkpoint["model"], tmp_path / CHECKPOINT_NAME)  # a bare state_dict
    with pytest.raises(ValueError, match=r"cannot be resumed: it lacks \['epoch', 'model', 'optimizer'"):
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {k: v for k, v in checkpoint.items() if k != "optimizer"})
    with pytest.raises(ValueError, match=re.escape("cannot be resumed: it lacks ['optimizer'] (a bare state_dict")):
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True)


def test_a_checkpoint_of_another_num_classes_says_so(finished_run, tmp_path):
    checkpoint = load_checkpoint(finished_run)
    checkpoint["epoch"] = 1
    save_checkpoint(tmp_path / CHECKPOINT_NAME, checkpoint)
    with pytest.raises(
        ValueError, match=re.escape("holds weights of another model (size mismatch for roi_heads.")
    ) as e:
        train(maskrcnn_small(num_classes=3), recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True)
    assert "they were trained for num_classes=6" in str(e.value)


def test_the_thread_count_is_saved_and_another_one_warns_on_resume(finished_run, tmp_path):
    checkpoint = load_checkpoint(finished_run)
    assert checkpoint["exactness"]["threads"] == 1 and checkpoint["exactness"]["torch"] == torch.__version__
    checkpoint["epoch"], checkpoint["trace"]["epochs"] = 1, checkpoint["trace"]["epochs"][:1]
    checkpoint["exactness"]["threads"] = 3
    save_checkpoint(tmp_path / CHECKPOINT_NAME, checkpoint)
    with pytest.warns(
        ResumeNotExact,
        match=re.escape("(threads 3 -> 1): the losses will drift from it; for an exact resume use --threads 3"),
    ):
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True)


def test_a_disk_that_fills_up_while_writing_the_trace_leaves_the_previous_trace_whole(tmp_path, monkeypatch):
    real_write_text, writes = Path.write_text, []

    def fill_up_at_the_second_trace(path, text, *args, **kwargs):
        if path.name == loop.TRACE_NAME + ".tmp":
            writes.append(path)
            if len(writes) == 2:  # half the text reaches the disk, then it is full
                real_write_text(path, text[: len(text) // 2])
                raise OSError(28, "No space left on device")
        return real_write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fill_up_at_the_second_trace)
    with pytest.raises(OutputFolderError) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False)
    assert str(error.value).startswith(
        f"epoch 2's checkpoint is written ({tmp_path / CHECKPOINT_NAME}), but trace.json was not updated (No space "
        f"left on device): it is left whole as it was; free some space, then resume with --resume"
    )
    assert len(TrainingTrace.load(tmp_path / loop.TRACE_NAME).epochs) == 1  # epoch 1's trace, whole
    assert load_checkpoint(tmp_path)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, loop.TRACE_NAME]  # no .tmp, no run.lock


# A real training run that holds its folder for minutes (it is killed long before the end)
LONG_RUN_OPTIONS = "--epochs 2 --images-per-epoch 400 --batch-size 2 --val-images 2 --image-size 64 --no-progress"


def start_a_run(out: Path) -> subprocess.Popen:
    """`python -m mrcnn_course train --out OUT` in a process of its own, once it holds OUT (run.lock names it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mrcnn_course", "train", "--out", str(out), *LONG_RUN_OPTIONS.split(), "--threads", "1"],
        env={**os.environ, "TQDM_DISABLE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    lock = out / checkpoints.LOCK_NAME
    while not (lock.exists() and lock.read_text()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()[1]
    return process


def test_one_run_at_a_time_in_a_folder_and_a_killed_run_leaves_it_free(tmp_path):
    out = tmp_path / "run"
    first = start_a_run(out)
    try:
        busy = f"{out} is in use by another training run (process {first.pid}, started "
        for resume in (False, True):  # a second run, fresh or resumed, is refused before it trains
            steps = []
            with pytest.raises(checkpoints.FolderInUse) as refused:
                train(recipe=TWO_EPOCHS, out=out, resume=resume, progress=False, on_step=steps.append)
            assert str(refused.value).startswith(busy) and steps == []
            assert "-m mrcnn_course train --out" in str(refused.value)  # its command line
            assert str(refused.value).endswith("wait for it to finish, or choose another output folder (--out, out=)")
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()  # SIGKILL: no cleanup runs, run.lock stays on disk
        first.wait()
    assert (out / checkpoints.LOCK_NAME).exists()
    lock = checkpoints.lock_output_folder(out)  # the killed run's flock went with its process
    assert lock is not None and (out / checkpoints.LOCK_NAME).read_text().startswith(f"{os.getpid()}\n")
    lock.release()
    assert not (out / checkpoints.LOCK_NAME).exists()


def test_a_resume_into_a_missing_folder_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(recipe=TWO_EPOCHS, out=tmp_path / "missing", resume=True, progress=False)
    assert not (tmp_path / "missing").exists()
