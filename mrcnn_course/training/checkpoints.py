"""Checkpoints that lose nothing: model, optimizer, schedule, random states, the trace so far, the data position.

    save_checkpoint(path, checkpoint)     # atomic: a temporary file, then os.replace; with a SHA-256 digest
    checkpoint = load_checkpoint(path)    # refuses a file whose digest does not match (flipped or lost bytes)
    set_rng_state(checkpoint["rng"][rank])

A run killed at any moment leaves either the previous checkpoint or the new one, never half a file,
because os.replace swaps the finished file in at once. With the random states of torch, numpy and
Python restored, and the data order a function of the seed and the epoch, a resumed run continues
exactly where the checkpoint left off (loop.train(resume=True)).

What a checkpoint holds (a dict; torch.save format):
    epoch         epochs completed: training resumes at epoch + 1, step 1 (the data position)
    model         model.state_dict()
    optimizer     optimizer.state_dict()
    scheduler     scheduler.state_dict()
    rng           one rng_state() per process (distributed runs have one per rank)
    trace         TrainingTrace.to_dict() up to this epoch
    recipe        the Recipe as a dict, so a resume with a different recipe is refused (lr may change)
    components    which implementation of each component ran (the trace's record)
    world_size    processes that trained it
    exactness     run_conditions(): what else a bit-exact resume needs (threads, versions, device)

Nothing in it but tensors, numbers, text, None and lists/dicts of them, so it is read with
torch.load(weights_only=True): reading a checkpoint never runs code. A pickle that names any other Python
object (a handed-around file with a pickled os.system call, say) is refused unread.

On disk: one header line, DIGEST_HEADER + the payload's SHA-256 in hex, then torch.save's bytes. A file
without the header (a bare state_dict from torch.save) is read the same safe way, without the digest check.

An output folder belongs to one run at a time: lock_output_folder() takes an flock on FOLDER/run.lock
(which names the owner's process), and a second run into the folder, fresh or resumed, is refused with
the owner's process id. The operating system drops an flock when its process ends, however it ends, so a
killed run never leaves its folder locked. POSIX only (fcntl): Windows is not a target of the course.
"""

import hashlib
import io
import os
import pickle
import random
import re
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch

from mrcnn_course.training.distributed import World
from mrcnn_course.training.stopping import what_is_kept

CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = "run.lock"  # in the output folder while a run trains there; it names the run's process
CHECKPOINT_FORMAT = 2  # 1 held numpy's random state as numpy objects, which only an unsafe torch.load reads
DIGEST_HEADER = f"mrcnn_course checkpoint format={CHECKPOINT_FORMAT} sha256=".encode("ascii")  # + 64 hex digits
HEADER_START = b"mrcnn_course checkpoint "  # the header of every format; format 1 had no format= field
# the parts of a checkpoint that train(resume=True) needs (a bare state_dict has none of them)
RESUMABLE_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "trace", "recipe", "world_size")
# recipe settings a resume may change: a run that diverged continues from its last good checkpoint at a lower
# peak learning rate (the schedule's shape and the data stay the same)
CHANGEABLE_ON_RESUME = ("lr",)

T = TypeVar("T")


class OutputFolderError(OSError):
    """The output folder cannot hold the run's files: missing and not creatable, not writable, or full."""


class FolderInUse(OutputFolderError):
    """Another training run, alive, holds the output folder's lock."""


class ResumeNotExact(UserWarning):
    """A resumed run will not repeat an uninterrupted one bit for bit (another thread count, torch, device)."""


def rng_state() -> dict:
    """The random states of torch (CPU and, if present, CUDA), numpy and Python, as tensors, numbers, text
    and lists only (what torch.load(weights_only=True) reads)."""
    generator, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    # numpy's state as its parts: the Mersenne Twister's 624 uint32 keys as plain integers, not an ndarray
    numpy_state = [generator, np.asarray(keys).tolist(), position, has_gauss, cached_gaussian]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() returned."""
    generator, keys, position, has_gauss, cached_gaussian = state["numpy"]
    torch.set_rng_state(state["torch"])
    np.random.set_state((generator, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states(world: World) -> list[dict]:
    """[rng_state() of process 0, of process 1, ...] on every process (just [rng_state()] in one process)."""
    if world.size == 1:
        return [rng_state()]
    states: list[Any] = [None] * world.size  # filled by all_gather_object
    torch.distributed.all_gather_object(states, rng_state())  # every process's state, for an exact resume
    return states


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's random (the model's initial weights and its random sampling)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """torch.save, with a digest of the bytes, to a temporary file beside `path`, then os.replace it: readers
    see the old file or the new. A failed write (a full disk) removes the temporary file and raises
    OutputFolderError; the previous checkpoint stays as it was."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    payload = buffer.getbuffer()

    def write(file: BinaryIO) -> None:
        file.write(DIGEST_HEADER + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n")
        file.write(payload)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_whole(path, write)
    except OSError as error:
        raise OutputFolderError(
            f"cannot write {path} ({error.strerror or error}): free some space, or make the folder writable"
        ) from None
    finally:
        payload.release()  # the view before its buffer: a BytesIO freed while still viewed raises BufferError
    return path


def replace_whole(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """write(file) into a temporary file beside `path`, flushed to disk, then os.replace it over `path`: readers
    see the old file or the new one, never part of one. A failure (a full disk, an exception, a second Ctrl-C)
    removes the temporary file and raises again; `path` stays as it was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # on disk before the swap, so a crash cannot leave an empty file in place
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by save_checkpoint, or a bare state_dict saved with torch.save (on the CPU),
    with torch.load(weights_only=True): a file that holds other Python objects is refused, never run."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train with --out FOLDER first, then pass FOLDER/{CHECKPOINT_NAME}"
        )
    content = path.read_bytes()
    payload = memoryview(content)  # the bytes torch.save wrote (a view: no copy of a large file)
    if content.startswith(HEADER_START):
        end = content.index(b"\n") if b"\n" in content else len(content)
        if not content.startswith(DIGEST_HEADER):
            written = re.match(rb"format=(\d+) ", content[len(HEADER_START) : end])
            version = int(written[1]) if written else 1
            age, fix = (
                ("a newer course version", "update the course to read it")
                if version > CHECKPOINT_FORMAT
                else (
                    "an older course version",
                    "train again with --out FOLDER, or use the course version that wrote it",
                )
            )
            raise ValueError(
                f"{path} is a checkpoint of {age} (format {version}; this version reads format "
                f"{CHECKPOINT_FORMAT}, which holds only tensors, numbers and text so that reading it cannot run "
                f"code): it was not loaded; {fix}"
            )
        digest, payload = content[len(DIGEST_HEADER) : end].decode("ascii", "replace"), payload[end + 1 :]
        if hashlib.sha256(payload).hexdigest() != digest:
            raise ValueError(
                f"{path} is damaged: its bytes do not match the digest saved with them (a copy cut short, or "
                f"a failing disk); use another copy of it, or start the run again"
            )
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's words name the Python object it refused ("Unsupported global: GLOBAL numpy...",
        # "unsupported GLOBAL posix.system"); any other failure here means torch.save did not write the file
        refused = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(error), re.IGNORECASE)
        if refused is None:  # torch's own words here advise an unsafe load: not repeated
            raise ValueError(
                f"{path} is not a readable checkpoint (not a file torch.save wrote, or a damaged one): was it "
                f"written by training?"
            ) from None
        raise ValueError(
            f"not a course checkpoint or state_dict: {path} holds a Python object ({refused[1]}) besides "
            f"tensors, numbers, text and lists/dicts, and reading it could run code, so it was not loaded. A "
            f"course checkpoint is the checkpoint.pt that `python -m mrcnn_course train --out FOLDER` writes; a "
            f"state_dict is model.state_dict() saved with torch.save: ask for one of those"
        ) from None
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable checkpoint ({error}): was it written by training?") from None


def run_conditions(device: torch.device) -> dict:
    """What a bit-exact resume needs besides the checkpoint: float sums are added in another order with
    another thread count (the losses part by percents within an epoch), another torch or another device."""
    return {
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # a plain str: TorchVersion is an object weights_only refuses
        "numpy": np.__version__,
        "device": device.type,
    }


def warn_if_not_exact(saved: dict | None, now: dict) -> None:
    """Warn (ResumeNotExact) when the resumed run differs from the saved run_conditions()."""
    if saved is None:
        return
    changed = [f"{name} {saved[name]} -> {now[name]}" for name in now if name in saved and saved[name] != now[name]]
    if changed:
        threads = saved.get("threads", now["threads"])
        advice = f"; for an exact resume use --threads {threads}" if threads != now["threads"] else ""
        warnings.warn(
            f"this resume will not repeat the uninterrupted run exactly ({', '.join(changed)}): the losses "
            f"will drift from it{advice}",
            ResumeNotExact,
            stacklevel=5,  # the line that called train(): warn_if_not_exact < TrainingRun.restore < start < train
        )


def check_output_folder(folder: Path, needed_bytes: int) -> None:
    """Create `folder` if needed and check, before any training, that a checkpoint of about `needed_bytes`
    can be written in it: an OutputFolderError says what is wrong now rather than after the first epoch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test.tmp"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise cannot_write_in(folder, error) from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OutputFolderError(
            f"the output folder {folder} has {free / 1e6:.0f} MB free, but a checkpoint needs about "
            f"{needed_bytes / 1e6:.0f} MB: free some space, or choose a folder on another disk"
        )


def cannot_write_in(folder: Path, error: OSError) -> OutputFolderError:
    return OutputFolderError(
        f"cannot write in the output folder {folder} ({error.strerror or error}): choose a folder you can "
        f"write to (--out, out=)"
    )


class OutputFolderLock:
    """The output folder's lock, held by this process until release(): an exclusive flock on the open
    FOLDER/run.lock, which holds this process's id, start time and command line for a run that finds the
    folder busy. The flock goes with the process, so a killed run leaves at worst a stale run.lock that
    the next run takes over."""

    def __init__(self, path: Path, descriptor: int):
        self.path, self.descriptor = path, descriptor

    def release(self) -> None:
        """Remove run.lock and drop the flock (in that order: a run that opened the file before it was removed
        finds it gone once it gets the flock, and tries again on a new file)."""
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)


def lock_output_folder(folder: Path, create: bool = True) -> OutputFolderLock | None:
    """Take `folder` for this run (creating it unless create=False: then a missing folder is not locked, and
    None is returned, for the resume to say there is no run there). Raises FolderInUse, naming the process
    that holds it, or OutputFolderError when the folder cannot be written."""
    import fcntl  # POSIX only; imported here so that the package imports on Windows too

    path = folder / LOCK_NAME
    while True:
        try:
            if create:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                return None
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise cannot_write_in(folder, error) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FolderInUse(
                f"{folder} is in use by another training run ({lock_owner(path)}): wait for it to finish, or "
                f"choose another output folder (--out, out=)"
            ) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:  # its owner removed it on release, after this process had opened it
            same_file = False
        if not same_file:
            os.close(descriptor)
            continue
        lock = OutputFolderLock(path, descriptor)
        try:
            owner = f"{os.getpid()}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n{shlex.join(sys.orig_argv)}\n"
            os.ftruncate(descriptor, 0)  # a stale run.lock of a killed run holds its process id
            os.write(descriptor, owner.encode())
        except OSError as error:
            lock.release()
            raise cannot_write_in(folder, error) from None
        return lock


def lock_owner(path: Path) -> str:
    """Who holds the lock at `path`, in words: "process 1234, started 2025-01-31 10:00:00: python -m ..."."""
    try:
        pid, started, command = (path.read_text().splitlines() + ["", "", ""])[:3]
    except OSError:
        pid = started = command = ""
    if not pid:  # it has the flock but has not written its name yet
        return "a process that is just starting"
    return f"process {pid}, started {started}: {command}"


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About the disk space a checkpoint needs while it is rewritten: the weights and AdamW's two moments
    (3 copies of the parameters), twice (the new file is written beside the old one), and 10 MB for the rest."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * 3 * weights + 10**7


def on_rank_0(world: World, write: Callable[[], T]) -> T | None:
    """Run `write` on rank 0, the process that writes the files, and raise its OutputFolderError on every
    rank, so that none is left waiting for the others in its next collective. Returns what `write` returned
    (on rank 0; None on the others)."""
    problem, result, raised = None, None, None
    if world.is_rank_0:
        try:
            result = write()
        except OutputFolderError as error:
            problem, raised = str(error), error
    problem = world.broadcast_from_rank_0(problem)
    if raised is not None:
        raise raised  # its own type (FolderInUse, say) on rank 0
    if problem is not None:
        raise OutputFolderError(problem)
    return result


def check_output_on_rank_0(folder: Path, needed_bytes: int, world: World) -> None:
    """check_output_folder by rank 0, its verdict raised on every rank."""
    on_rank_0(world, lambda: check_output_folder(folder, needed_bytes))


def save_run(checkpoint_path: Path, checkpoint: dict, trace, trace_path: Path, world: World) -> None:
    """Rank 0 writes the checkpoint, then the trace (a TrainingTrace) at trace_path. If the folder fails (full,
    removed, read-only), every rank raises an OutputFolderError that says which epoch's work is lost and which
    checkpoint is kept."""
    on_rank_0(world, lambda: write_run(checkpoint_path, checkpoint, trace, trace_path))


def write_run(checkpoint_path: Path, checkpoint: dict, trace, trace_path: Path) -> None:
    epoch = checkpoint["epoch"]
    try:
        save_checkpoint(checkpoint_path, checkpoint)
    except OutputFolderError as error:
        raise OutputFolderError(
            f"epoch {epoch} finished but its checkpoint was not written: {error}; "
            f"{what_is_kept(checkpoint_path, epoch - 1)}: resume with --resume (resume=True) once it can be written"
        ) from None
    try:
        trace.save(trace_path)
    except OSError as error:
        raise OutputFolderError(
            f"epoch {epoch}'s checkpoint is written ({checkpoint_path}), but {trace_path.name} was not updated "
            f"({error.strerror or error}): it is left whole as it was; free some space, then resume with --resume "
            f"(resume=True): the checkpoint holds the trace too, and the next epoch rewrites {trace_path.name}"
        ) from None


def load_model_state(model: torch.nn.Module, state: dict, source: str | os.PathLike | None) -> None:
    """model.load_state_dict(state), with a message that says which model the weights are for."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as error:
        classes = state.get("roi_heads.box_predictor.cls_score.weight") if isinstance(state, dict) else None
        trained_for = f"; they were trained for num_classes={len(classes)}" if classes is not None else ""
        first_problem = str(error).split("\n\t")[1] if "\n\t" in str(error) else str(error)[:200]
        raise ValueError(
            f"{source} holds weights of another model ({first_problem.strip()}){trained_for}: use the model they "
            f"were trained with, or start a new run in another folder"
        ) from None


def checkpoint_to_resume(path: Path | None, resume: bool, recipe: dict, world: World) -> dict | None:
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
    missing = [key for key in RESUMABLE_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} cannot be resumed: it lacks {missing} (a bare state_dict, or weights saved without "
            f"their optimizer); resume continues a run that train wrote with out=FOLDER (--out), to evaluate "
            f"these weights use `python -m mrcnn_course evaluate --checkpoint {path}`"
        )
    changed = {k: (v, recipe.get(k)) for k, v in checkpoint["recipe"].items() if recipe.get(k) != v}
    if set(changed) - set(CHANGEABLE_ON_RESUME) == {"epochs"}:
        planned, trained, asked = checkpoint["recipe"]["epochs"], checkpoint["epoch"], recipe["epochs"]
        raise ValueError(
            f"the run in {path.parent} is planned for {planned} epochs (its learning-rate schedule ends there) and "
            f"has trained {trained}; epochs={asked} (--epochs {asked}) would change its schedule: resume with "
            f"epochs={planned} (--epochs {planned}) to finish it, or start a new run of {asked} epochs in another "
            f"folder"
        )
    if set(changed) - set(CHANGEABLE_ON_RESUME):
        raise ValueError(
            f"the run in {path.parent} used another recipe (was -> now: {changed}): resume with "
            f"the same settings (only {list(CHANGEABLE_ON_RESUME)} may change), or start a new run in another folder"
        )
    if checkpoint["world_size"] != world.size:
        raise ValueError(
            f"the run in {path.parent} ran on {checkpoint['world_size']} processes, not {world.size}: "
            f"resume it with the same number"
        )
    return checkpoint
