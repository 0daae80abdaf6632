"""Checkpoints that lose nothing: model, optimizer, schedule, random states, the trace so far, the data position.

    save_checkpoint(path, checkpoint)     # atomic: a temporary file, then os.replace
    checkpoint = load_checkpoint(path)
    set_rng_state(checkpoint["rng"][rank])

A run killed at any moment leaves either the previous checkpoint or the new one, never half a file,
because os.replace swaps the finished file in at once. With the random states of torch, numpy and
Python restored, and the data order a function of the seed and the epoch, a resumed run continues
exactly where the checkpoint left off (training.train(resume=True)).

What a checkpoint holds (a dict; torch.save format):
    epoch         epochs completed: training resumes at epoch + 1, step 1 (the data position)
    model         model.state_dict()
    optimizer     optimizer.state_dict()
    scheduler     scheduler.state_dict()
    rng           one rng_state() per process (distributed runs have one per rank)
    trace         TrainingTrace.to_dict() up to this epoch
    recipe        the Recipe as a dict, so a resume with a different recipe is refused
"""

import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict:
    """The random states of torch (CPU and, if present, CUDA), numpy and Python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states(world: int) -> list[dict]:
    """[rng_state() of process 0, of process 1, ...] on every process (just [rng_state()] when world is 1)."""
    if world == 1:
        return [rng_state()]
    states = [None] * world
    torch.distributed.all_gather_object(states, rng_state())  # every process's state, for an exact resume
    return states


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's random (the model's initial weights and its random sampling)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """torch.save to a temporary file beside `path`, then os.replace it: readers see the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())  # on disk before the swap, so a crash cannot leave an empty file in place
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by save_checkpoint (on the CPU)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train with --out FOLDER first, then pass FOLDER/{CHECKPOINT_NAME}"
        )
    try:
        # weights_only=False: the checkpoint holds numpy and Python random states, not only tensors.
        # Load only checkpoints you wrote yourself (pickle can run code).
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable checkpoint ({error}): was it written by training?") from None


def checkpoint_to_resume(path: Path | None, resume: bool, recipe: dict, world: int) -> dict | None:
    """The checkpoint to continue from, or None for a new run; refuses what would lose or mix up work."""
    if not resume:
        if path is not None and path.exists():
            raise FileExistsError(
                f"{path} already holds a training run: pass resume=True (--resume) to continue "
                f"it, or choose another output folder"
            )
        return None
    if path is None:
        raise ValueError("resume=True needs out=FOLDER: the folder of the run to continue")
    checkpoint = load_checkpoint(path)
    if checkpoint["recipe"] != recipe:
        changed = {k: (v, recipe.get(k)) for k, v in checkpoint["recipe"].items() if recipe.get(k) != v}
        raise ValueError(
            f"the run in {path.parent} used another recipe (was -> now: {changed}): resume with "
            f"the same settings, or start a new run in another folder"
        )
    if checkpoint["world_size"] != world:
        raise ValueError(
            f"the run in {path.parent} ran on {checkpoint['world_size']} processes, not {world}: "
            f"resume it with the same number"
        )
    return checkpoint
