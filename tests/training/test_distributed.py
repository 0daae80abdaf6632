"""torchrun with 2 processes (gloo on the CPU): both ranks train their shares, rank 0 writes the files. And the
CPUs a process may use: its affinity and its control group's quota (fake cgroup files), which set torch's threads.

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

from mrcnn_course.training import distributed
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from mrcnn_course.training.distributed import (
    World,
    cores_available,
    cpu_quota,
    cpus_available,
    is_main_process,
    start_distributed,
    use_available_cpus,
)
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


def fake_cgroups(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup mount under tmp_path holding `files` ({relative path: text}) and a /proc/self/cgroup saying
    `membership`; returns (mount, membership file)."""
    mount = tmp_path / "cgroup"
    for name, text in files.items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_text(text)
    (tmp_path / "membership").write_text(membership)
    return mount, tmp_path / "membership"


def test_a_cgroup_v2_quota_is_read_along_the_path_to_the_root(tmp_path):
    jupyterhub = "0::/user.slice/jupyter-ada.service\n"  # a JupyterHub user's server under systemd
    mount, membership = fake_cgroups(
        tmp_path,
        jupyterhub,
        {"user.slice/jupyter-ada.service/cpu.max": "150000 100000\n", "user.slice/cpu.max": "max 100000\n"},
    )
    assert cpu_quota(mount, membership) == 1.5
    (mount / "user.slice/cpu.max").write_text("50000 100000\n")  # the parent's quota is smaller: it counts
    assert cpu_quota(mount, membership) == 0.5
    mount, membership = fake_cgroups(tmp_path / "container", "0::/\n", {"cpu.max": "400000 100000\n"})
    assert cpu_quota(mount, membership) == 4.0  # a container's own namespace: its group is the root


def test_a_cgroup_v1_quota_and_no_quota(tmp_path):
    docker = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    group = "cpu,cpuacct/docker/abc"
    files = {f"{group}/cpu.cfs_quota_us": "200000\n", f"{group}/cpu.cfs_period_us": "100000\n"}
    mount, membership = fake_cgroups(tmp_path, docker, files)
    assert cpu_quota(mount, membership) == 2.0
    (mount / group / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert cpu_quota(mount, membership) is None
    assert cpu_quota(mount, tmp_path / "no such file") is None  # not Linux, or no /proc
    unlimited, membership = fake_cgroups(tmp_path / "v2", "0::/\n", {"cpu.max": "max 100000\n"})
    assert cpu_quota(unlimited, membership) is None


def test_the_cpus_available_are_the_affinity_within_the_quota(tmp_path, monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    for quota, expected in (("max", affinity), ("150000", 1), ("50000", 1), (str(100000 * (affinity + 8)), affinity)):
        mount, membership = fake_cgroups(tmp_path / quota, "0::/\n", {"cpu.max": f"{quota} 100000\n"})
        monkeypatch.setattr(distributed, "CGROUP_MOUNT", mount)
        monkeypatch.setattr(distributed, "CGROUP_MEMBERSHIP", membership)
        assert cpus_available() == expected, quota  # a share of a CPU rounds down, to at least 1
        assert 1 <= cores_available() <= cpus_available()


def test_torch_threads_follow_the_cpus_available_unless_omp_num_threads_chose(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(distributed, "cpus_available", lambda: 1)  # a quota of one CPU
        torch.set_num_threads(2)
        assert use_available_cpus() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's (or autograding's) choice stands
        torch.set_num_threads(2)
        assert use_available_cpus() == 2
    finally:
        torch.set_num_threads(threads)


def test_importing_the_package_sets_the_threads_to_the_cpus_available():
    """In a fresh process whose torch was set to more threads than there are CPUs (as a machine's many cores
    would give it), importing what every lesson imports brings the count down to cpus_available()."""
    script = (
        "import os, torch\n"
        "torch.set_num_threads(len(os.sched_getaffinity(0)) + 3)\n"
        "from mrcnn_course.teaching import grading\n"
        "from mrcnn_course.training.distributed import cpus_available\n"
        "print(torch.get_num_threads(), cpus_available())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, cpus = done.stdout.split()
    assert threads == cpus
