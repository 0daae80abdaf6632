"""torchrun with 2 processes (gloo on the CPU): both ranks train their shares, rank 0 writes the files.

One tiny epoch; about 20 s on 2 busy cores (two Python processes start torch).
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import torch

from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from mrcnn_course.training.distributed import World, is_main_process, start_distributed
from mrcnn_course.training.training_trace import LOSS_PARTS, TOTAL, TrainingTrace

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_torchrun_trains_on_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    # --standalone: a free port on this machine; a session of its own, so a timeout ends the workers too
    process = subprocess.Popen(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mrcnn_course",
            "train",
            "--out",
            str(out),
            *"--epochs 1 --images-per-epoch 8 --batch-size 4 --val-images 4 --image-size 64".split(),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-3000:]
    # each rank writes its line whole (flush=True), but two processes share the pipe: rank 1's line may land
    # inside rank 0's longer output, so it is searched for, not expected at a line's start
    finished = re.findall(r"(process \d of 2): \d+ epochs, final training loss ([\d.]+)", stdout)
    assert sorted(rank for rank, _ in finished) == ["process 0 of 2", "process 1 of 2"], stdout
    assert len({loss for _, loss in finished}) == 1  # both ranks ended with the same loss
    trace = TrainingTrace.load(out / "trace.json")
    record = trace.epochs[0]
    assert len(trace.epochs) == 1 and set(record.train_losses) == {TOTAL, *LOSS_PARTS}
    assert len(record.predictions) == 4 and len(trace.val_images) == 4
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2  # every rank's random state
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])  # own streams
    assert json.loads((out / "trace.json").read_text())["config"]["batch_size"] == 4


def test_a_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    world, device, started = start_distributed()
    assert world == World(rank=0, size=1) and world.is_rank_0 and not started
    assert is_main_process() and world.broadcast_from_rank_0({"a": 1}) == {"a": 1}
    assert torch.equal(world.sum(torch.ones(2)), torch.ones(2))  # one process: the sum is its own tensor
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


def test_each_rank_takes_every_size_th_item_from_its_rank_on():
    assert [World(rank, 3).share(range(8)) for rank in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
