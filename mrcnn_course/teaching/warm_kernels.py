"""Kernels that start warm at autograding: each a fork of a process that has already imported what lessons import.

nbgrader runs every notebook in a fresh kernel, and a lesson's kernel spends its first seconds importing
IPython, torch, the package and matplotlib, for every notebook of every learner. At autograding
(course.autograde) each grading process starts a zygote once (`python -m mrcnn_course.teaching.warm_kernels
--zygote SOCKET`): it imports all that, then waits. Each kernel is a fork of it, given the environment, folder,
standard streams and connection file of the launch: a process of its own, in a session of its own, whose
memory no notebook has touched before it (nothing passes from one learner's kernel to the next).

    launch(argv)    the launcher that nbgrader_steps.WarmKernelManager starts where the kernel spec says
                    ipykernel's (`python -m mrcnn_course.teaching.warm_kernels -f FILE`), which jupyter_client
                    watches as the kernel: a small process that asks the zygote for a kernel (its socket:
                    ZYGOTE in the environment), passes on the signals it gets (an interrupt, a shutdown) and
                    ends when the kernel ends, with its exit code; killed, the zygote kills the kernel.
                    Without a zygote (`nbgrader autograde` from the command line) it becomes ipykernel's own
                    launcher, so kernels start as usual.
    start_zygote(environment) / stop_zygote()    for the grading process (course.autograde)

What it leaves out: a kernel whose notebook needs a module the zygote imported in another version than the
file on disk now holds (the package changed during a grading run) runs the zygote's.
"""

import atexit
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ZYGOTE = "MRCNN_KERNEL_ZYGOTE"  # the zygote's socket, in the grading process's environment and so its kernels'
IPYKERNEL_LAUNCHER = ["-m", "ipykernel_launcher"]
THIS_LAUNCHER = ["-m", "mrcnn_course.teaching.warm_kernels"]
PRELOADED = (  # what the lessons' setup cells import, or what those import
    "ipykernel.kernelapp",
    "torch",
    "torchvision",
    "matplotlib.pyplot",
    "mrcnn_course.model.maskrcnn",
    "mrcnn_course.show.viz",
    "mrcnn_course.show.stage_viz",
    "mrcnn_course.show.explorers",
    "mrcnn_course.show.widgets",
    "mrcnn_course.teaching.grading",
    "mrcnn_course.training.loop",
    "mrcnn_course.training.evaluation",
    "mrcnn_course.training.pretrained",
)
MESSAGE = 1 << 20  # bytes: the largest message (a launch: its environment and arguments)


# ----- the grading process's side -----

_ZYGOTE: list[tuple[subprocess.Popen, tempfile.TemporaryDirectory]] = []


def start_zygote(environment: dict[str, str]) -> None:
    """Start this process's zygote (if it has none), with `environment` added to this process's (the kernels',
    nbgrader_steps.AUTOGRADING_ENV: tqdm and matplotlib read it at import), and name its socket in
    os.environ[ZYGOTE], which the kernels' launchers inherit. It has imported PRELOADED when this returns."""
    if _ZYGOTE:
        return
    folder = tempfile.TemporaryDirectory(prefix="mrcnn-kernels-")  # mode 0700: this user's only
    path = str(Path(folder.name) / "zygote")
    zygote = subprocess.Popen(
        [sys.executable, *THIS_LAUNCHER, "--zygote", path],
        # what ipykernel sets in a kernel before any import; tqdm and matplotlib read the environment at import
        env={**os.environ, **environment, "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
        stdin=subprocess.PIPE,  # it ends when this closes
        stdout=subprocess.PIPE,
    )
    assert zygote.stdout is not None  # a pipe (Popen)
    if zygote.stdout.readline().strip() != b"ready":  # it could not start: kernels start as usual
        zygote.kill()
        zygote.wait()
        folder.cleanup()
        return
    _ZYGOTE.append((zygote, folder))
    os.environ[ZYGOTE] = path
    atexit.register(stop_zygote)


def stop_zygote() -> None:
    """End this process's zygote (its kernels with it); kernels then start as usual."""
    os.environ.pop(ZYGOTE, None)
    if _ZYGOTE:
        zygote, folder = _ZYGOTE.pop()
        assert zygote.stdin is not None  # a pipe (Popen)
        zygote.stdin.close()
        zygote.wait()
        folder.cleanup()
        atexit.unregister(stop_zygote)


# ----- the launcher: what jupyter_client starts and watches as the kernel -----


def launch(argv: list[str]) -> int:
    """Have the zygote fork a kernel with ipykernel's arguments `argv` and this process's environment, folder and
    standard streams; pass on SIGINT, SIGTERM, SIGHUP and SIGQUIT; return the kernel's exit code when it ends.
    Without a reachable zygote, become ipykernel's launcher (os.execv)."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        channel.connect(os.environ[ZYGOTE])
    except (KeyError, OSError):
        os.execv(sys.executable, [sys.executable, *IPYKERNEL_LAUNCHER, *argv])
    request = {"argv": argv, "environment": dict(os.environ), "folder": os.getcwd()}
    socket.send_fds(channel, [json.dumps(request).encode()], [0, 1, 2])
    started = channel.recv(MESSAGE).split()
    if started[:1] != [b"started"]:
        return 1
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, lambda number, frame: channel.send(f"signal {number}".encode()))
    while True:
        try:
            said = channel.recv(MESSAGE).split()
        except InterruptedError:
            continue
        if said[:1] == [b"ended"]:
            return int(said[1])
        if not said:  # the zygote ended
            return 1


# ----- the zygote -----


def zygote(path: str) -> None:
    """Import PRELOADED, say "ready", then fork a kernel for each launcher that connects to the socket at `path`,
    pass the signals it sends on to that kernel, tell it "ended CODE" when the kernel ends, and kill the kernel
    if the launcher goes first. It ends, with its kernels, when its input ends (stop_zygote)."""
    import importlib

    for module in PRELOADED:
        try:
            importlib.import_module(module)
        except ImportError:  # a kernel that needs it imports it itself
            pass
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listening.bind(path)
    listening.listen()
    print("ready", flush=True)
    kernels: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (the launcher's channel, the kernel's pid)
    channels: dict[int, int] = {}  # the launcher's channel's fd -> the kernel's pidfd
    while True:
        readable, _, _ = select.select([sys.stdin, listening, *channels, *kernels], [], [])
        for ready in readable:
            if ready is sys.stdin:
                for _, pid in kernels.values():
                    os.kill(pid, signal.SIGKILL)
                return
            if ready is listening:
                channel, _ = listening.accept()
                forked = _fork_kernel(channel, [listening.fileno(), *channels, *kernels])
                if forked is None:
                    channel.close()
                    continue
                pidfd = os.pidfd_open(forked)
                kernels[pidfd], channels[channel.fileno()] = (channel, forked), pidfd
                channel.send(f"started {forked}".encode())
            elif ready in kernels:  # a kernel ended
                channel, pid = kernels.pop(ready)
                del channels[channel.fileno()]
                _, status = os.waitpid(pid, 0)
                os.close(ready)
                try:
                    channel.send(f"ended {os.waitstatus_to_exitcode(status)}".encode())
                except OSError:  # its launcher has gone
                    pass
                channel.close()
            elif ready in channels:  # a launcher's signal, or its end
                pidfd = channels[ready]
                channel, pid = kernels[pidfd]
                said = channel.recv(MESSAGE).split()
                os.kill(pid, int(said[1]) if said[:1] == [b"signal"] else signal.SIGKILL)


def _fork_kernel(channel: socket.socket, zygotes: list[int]) -> int | None:
    """Fork a kernel for the launch the launcher sends on `channel` (its arguments, environment, folder and
    standard streams); the kernel's pid, or None for a launch that could not be read. `zygotes`: the zygote's
    other file descriptors (its socket, the other launchers', the other kernels'), closed in the kernel."""
    try:
        message, streams, _, _ = socket.recv_fds(channel, MESSAGE, 3)
        request = json.loads(message)
    except (OSError, ValueError):
        return None
    pid = os.fork()
    if pid:
        for stream in streams:
            os.close(stream)
        return pid
    code = 1
    try:
        channel.close()
        for descriptor in zygotes:
            os.close(descriptor)
        _become_kernel(request, streams)
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as leaving:
        code = leaving.code if isinstance(leaving.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return None  # never reached: the kernel ends above


def _become_kernel(request: dict[str, Any], streams: list[int]) -> None:
    """Make this fork what `python -m ipykernel_launcher ARGV` started by the launcher would be: a session of its
    own (signals reach it through the launcher), the launcher's standard streams, folder and environment, torch's
    threads as that environment says, and random generators at a fresh process's start."""
    os.setsid()
    for number, stream in enumerate(streams):
        os.dup2(stream, number)
        os.close(stream)
    zygote_folder = os.getcwd()
    os.chdir(request["folder"])
    if sys.path and sys.path[0] == zygote_folder:  # `python -m` puts its folder first: the kernel's own
        sys.path[0] = request["folder"]
    os.environ.clear()
    os.environ.update(request["environment"])
    sys.argv = ["ipykernel_launcher", *request["argv"]]
    if os.environ.get("JPY_PARENT_PID", "").isdigit():  # read by ipykernel at import, in the zygote: given again
        sys.argv.append(f"--IPKernelApp.parent_handle={os.environ['JPY_PARENT_PID']}")
    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    torch.manual_seed(torch.initial_seed())  # untouched by the imports: a fresh process's
    random.seed()
    signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        zygote(sys.argv[2])
    else:
        sys.exit(launch(sys.argv[1:]))
