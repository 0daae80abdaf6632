"""Bad input to training gets a clear error and loses nothing: the recipe, COCO folders, output folders,
divergence, checkpoints, thread counts and Ctrl-C. Every test asserts the message. (The model's own input
check, on images and targets, is tested in test_input_checks.py.)

The cases run tiny recipes (64-px scenes, one or two steps an epoch) and the command line's Ctrl-C runs in
a subprocess (marked slow).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_course.__main__ import main
from mrcnn_course.model import components
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import checkpoints, coco, data, evaluation, images, loop
from mrcnn_course.training.checkpoints import (
    CHECKPOINT_NAME,
    OutputFolderError,
    ResumeNotExact,
    load_checkpoint,
    save_checkpoint,
)
from mrcnn_course.training.loop import train
from mrcnn_course.training.recipe import Recipe
from mrcnn_course.training.stopping import TrainingDiverged, TrainingInterrupted, interrupted
from mrcnn_course.training.training_trace import TrainingTrace

# two epochs of two steps: small enough to run a handful of times in this file
TINY = Recipe(epochs=2, images_per_epoch=4, batch_size=2, val_images=2, shown_images=1, image_size=64, seed=2)
TINY_OPTIONS = (
    "--epochs 2 --images-per-epoch 4 --batch-size 2 --val-images 2 --image-size 64 --seed 2 --no-progress".split()
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: training runs on one thread


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The output folder of a finished TINY run."""
    out = tmp_path_factory.mktemp("finished")
    train(recipe=TINY, out=out, progress=False)
    return out


# ----- the recipe -----
@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(grad_clip=-1), "grad_clip must be 0 (no limit) or a positive gradient norm (got -1)"),
        (dict(warmup=2), "warmup is a share of the steps, between 0 and 1 (got 2)"),
        (dict(lr=0), "lr must be a positive number (got 0)"),
        (dict(lr=float("nan")), "lr must be a positive number (got nan)"),
        (dict(weight_decay=-0.1), "weight_decay must lie in [0, 1) (got -0.1)"),
        (dict(image_size=8), "image_size must be an integer of at least 16 pixels (got 8)"),
        (dict(shown_images=-1), "shown_images must be at least 0 (got -1)"),
        (dict(num_objects=(3, 1)), "num_objects must be (fewest, most) with 0 <= fewest <= most (got (3, 1))"),
        (dict(batch_size=0), "batch_size must be at least 1 (got 0)"),
    ],
)
def test_a_bad_recipe_says_which_setting_and_why(setting, message):
    with pytest.raises(ValueError, match=re.escape("bad training recipe: ") + ".*" + re.escape(message)):
        Recipe(**setting)


# ----- COCO folders -----
def coco_folder(folder: Path, annotations: list[dict], images=None, categories=None) -> Path:
    """A COCO folder with one 20 x 30 black image (id 9, x.png) unless `images` says otherwise."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(folder / "images" / "x.png")
    content = {
        "images": images or [{"id": 9, "file_name": "x.png", "height": 20, "width": 30}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
    }
    (folder / "annotations.json").write_text(json.dumps(content))
    return folder


def annotation(**changes) -> dict:
    good = {
        "id": 5,
        "image_id": 9,
        "category_id": 1,
        "bbox": [4, 2, 10, 6],
        "area": 60,
        "iscrowd": 0,
        "segmentation": [[4, 2, 14, 2, 14, 8, 4, 8]],
    }
    return {k: v for k, v in {**good, **changes}.items() if v is not None}


BAD_COCO = [
    (annotation(segmentation=[]), "annotation 5 (image x.png): its segmentation is []: Mask R-CNN needs a mask"),
    (
        annotation(segmentation=[[4, 2, 14, 2]]),
        "annotation 5 (image x.png): a polygon of its segmentation has 4 "
        "numbers: a polygon needs x, y pairs of 3 points or more; fix the segmentation, or drop the annotation",
    ),
    (annotation(segmentation={"counts": "abc"}), "its RLE segmentation lacks 'size' or 'counts'"),
    (
        annotation(bbox=None),
        "annotation 5 (image x.png) has bbox None: each annotation needs bbox [x, y, width, height]",
    ),
    (annotation(category_id="1"), "annotation 5 (image x.png) has category_id '1', a str: category ids are integers"),
    (annotation(category_id=0), "annotation 5 (image x.png) has category_id 0: category ids start at 1"),
    (annotation(image_id=3), "annotation 5 refers to no image of the json (image_id 3)"),
]


@pytest.mark.parametrize("bad, message", BAD_COCO)
def test_a_broken_coco_annotation_is_named_when_the_folder_opens(tmp_path, bad, message):
    coco_folder(tmp_path, [bad])
    with pytest.raises(ValueError, match=re.escape(message)):
        coco.CocoFolder(tmp_path)


def test_duplicate_image_ids_and_string_category_ids_are_refused(tmp_path):
    twice = [{"id": 9, "file_name": "x.png"}, {"id": 9, "file_name": "y.png"}]
    coco_folder(tmp_path, [annotation()], images=twice)
    with pytest.raises(ValueError, match=re.escape("image id 9 is given to both x.png and y.png: each image needs")):
        coco.CocoFolder(tmp_path)
    coco_folder(tmp_path, [annotation()], categories=[{"id": "1", "name": "square"}])
    with pytest.raises(ValueError, match=re.escape("category entry 0 has id '1': category ids are integers")):
        coco.CocoFolder(tmp_path)


def test_category_ids_the_model_cannot_predict_are_refused(tmp_path):
    coco_folder(tmp_path, [annotation(), annotation(id=6, category_id=12)])
    assert len(coco.CocoFolder(tmp_path)) == 1  # without a model in mind, any category is fine
    message = (
        "1 annotations have category ids the model cannot predict (it has 6 classes, ids 1 to 5), e.g. "
        "annotations 6 (category 12): they would all count as missed"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        coco.CocoFolder(tmp_path, num_classes=6)
    with pytest.raises(ValueError, match=re.escape(message)):  # evaluate asks before running the model
        evaluation.evaluate(maskrcnn_small(num_classes=6), coco.CocoFolder(tmp_path))


def test_every_object_a_crowd_region_makes_map_undefined_not_minus_one():
    image, truth = data.make_scene(3, 64)
    truth["iscrowd"] = torch.ones_like(truth["iscrowd"])
    prediction = {**truth, "scores": torch.ones(len(truth["labels"])), "masks": truth["masks"][:, None].float()}
    with pytest.raises(ValueError, match=re.escape("every object of the targets is a crowd region (iscrowd=1)")):
        evaluation.coco_map([prediction], [truth])


def test_a_16_bit_png_is_read_at_its_level(tmp_path):
    levels = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "gray16.png")
    image = images.to_image_tensor(tmp_path / "gray16.png")
    assert image.shape == (3, 2, 2)
    assert torch.allclose(image[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]), atol=1e-4)
    assert torch.equal(image[0], image[2])  # gray in all three channels


def test_the_command_line_reads_a_coco_folder_of_any_layout(finished_run, tmp_path, capsys):
    coco.export_coco(data.ShapesDataset(2, 64, seed=5), tmp_path / "export")
    (tmp_path / "export" / "images").rename(tmp_path / "export" / "val2017")
    (tmp_path / "export" / "annotations.json").rename(tmp_path / "export" / "instances.json")
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(finished_run), "--coco", str(tmp_path / "export")])
    assert "on the command line --coco-annotations and --coco-images" in capsys.readouterr().err
    checkpoint, folder = str(finished_run), str(tmp_path / "export")
    options = ["--coco", folder, "--coco-annotations", "instances.json", "--coco-images", "val2017"]
    assert main(["evaluate", "--checkpoint", checkpoint, *options]) == 0
    assert "(2 images)" in capsys.readouterr().out


# ----- output folders -----
def test_an_output_folder_that_cannot_be_created_fails_before_the_first_step(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    steps = []
    with pytest.raises(OutputFolderError, match=re.escape(f"cannot write in the output folder {tmp_path}/a_file/run")):
        train(recipe=TINY, out=tmp_path / "a_file" / "run", progress=False, on_step=steps.append)
    assert steps == []


def test_a_missing_output_folder_is_created_and_a_full_one_refused_before_the_first_step(tmp_path, monkeypatch):
    checkpoints.check_output_folder(tmp_path / "new" / "run", 1000)
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**6})())
    steps = []
    with pytest.raises(OutputFolderError, match=r"has 1 MB free, but a checkpoint needs about \d+ MB: free some"):
        train(recipe=TINY, out=tmp_path / "full", progress=False, on_step=steps.append)
    assert steps == []


def test_a_disk_that_fills_up_while_saving_leaves_no_partial_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, {"epoch": 1})

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", full_disk)
    with pytest.raises(OutputFolderError, match=re.escape(f"cannot write {path} (No space left on device)")):
        save_checkpoint(path, {"epoch": 2})
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME] and load_checkpoint(path)["epoch"] == 1


def test_a_failed_save_during_training_names_the_epoch_and_the_kept_checkpoint(tmp_path, monkeypatch):
    real_fsync, saves = os.fsync, []

    def fill_up_at_the_second_save(descriptor):
        saves.append(1)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(checkpoints.os, "fsync", fill_up_at_the_second_save)
    with pytest.raises(OutputFolderError) as error:
        train(recipe=TINY, out=tmp_path, progress=False)
    assert f"epoch 2 finished but its checkpoint was not written: cannot write {tmp_path / CHECKPOINT_NAME}" in str(
        error.value
    )
    assert f"the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME}): resume with --resume" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, loop.TRACE_NAME]  # no checkpoint.pt.tmp


# ----- divergence -----
def no_infinity(constant: str):
    raise AssertionError(f"trace.json holds {constant}: not standard JSON")


def test_an_exploding_learning_rate_stops_at_the_first_step_with_advice_that_works(tmp_path):
    with pytest.raises(TrainingDiverged) as error:
        train(recipe=TINY, out=tmp_path, progress=False, lr=1e3)
    message = str(error.value)
    assert re.search(r"is (inf|nan|[\d.e+]+ \(above 10000: exploding\)) at epoch 1, step \d", message), message
    assert "no checkpoint was written before it (the first is written after epoch 1)" in message
    assert "so the same command starts it again" in message and "--lr 0.004 (lr=0.004)" in message
    assert "pass out=" not in message  # --out was passed
    assert not any(tmp_path.iterdir())  # nothing half written


@pytest.mark.slow
def test_a_loss_that_explodes_in_epoch_2_keeps_epoch_1_and_resumes_at_a_lower_learning_rate(tmp_path):
    exploded = []

    def mask_loss_that_explodes(*args):
        loss = components.COMPONENTS["maskrcnn_loss"].own(*args)
        return loss * 1e6 if exploded else loss

    with components.using(maskrcnn_loss=mask_loss_that_explodes), pytest.raises(TrainingDiverged) as error:
        train(recipe=TINY, out=tmp_path, progress=False, on_epoch=lambda trace, record: exploded.append(1))
    message = str(error.value)
    assert re.search(r"loss_mask is [\d.e+]+ \(above 10000: exploding\) at epoch 2, step 1", message), message
    assert f"the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME})" in message
    assert "resume from it with a lower learning rate: --resume --lr 0.0004 (resume=True, lr=0.0004)" in message
    json.loads((tmp_path / loop.TRACE_NAME).read_text(), parse_constant=no_infinity)
    # the advice works: the resume at the lower learning rate finishes the run and says what changed
    resumed = train(recipe=TINY, out=tmp_path, progress=False, resume=True, lr=4e-4)
    assert (
        len(resumed.epochs) == 2
        and "Resumed at a peak learning rate of 0.0004 (was 0.004)." in resumed.epochs[1].observation
    )
    assert load_checkpoint(tmp_path)["recipe"]["lr"] == 4e-4
    with pytest.raises(ValueError, match=re.escape("only ['lr'] may change")):
        train(recipe=TINY, out=tmp_path, progress=False, resume=True, seed=5)


def test_an_infinite_validation_loss_is_caught_too(tmp_path):
    def box_loss_infinite_in_validation(*args):
        losses = components.COMPONENTS["fastrcnn_loss"].own(*args)
        return losses if torch.is_grad_enabled() else (losses[0] * float("inf"), losses[1])

    with components.using(fastrcnn_loss=box_loss_infinite_in_validation), pytest.raises(TrainingDiverged) as error:
        train(recipe=TINY, progress=False, epochs=1)
    assert (
        "loss_classifier is inf on the validation images after epoch 1: training stopped; no checkpoint was "
        "written (pass out=FOLDER, --out FOLDER, to keep one per epoch)" in str(error.value)
    )


def test_the_command_line_reports_divergence_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "run"), *TINY_OPTIONS, "--lr", "1000"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "at epoch 1, step" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "curves.png").exists()


def test_trace_json_is_standard_json():
    trace = TrainingTrace([], [], ["background"], {"lr": float("inf")}, 0)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        trace.save(Path("/tmp/never-written-trace.json"))
    assert not Path("/tmp/never-written-trace.json.tmp").exists()


# ----- checkpoints -----
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
        train(recipe=TINY, out=tmp_path, progress=False, resume=True)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {k: v for k, v in checkpoint.items() if k != "optimizer"})
    with pytest.raises(ValueError, match=re.escape("cannot be resumed: it lacks ['optimizer'] (a bare state_dict")):
        train(recipe=TINY, out=tmp_path, progress=False, resume=True)


def test_a_checkpoint_of_another_num_classes_says_so(finished_run, tmp_path):
    checkpoint = load_checkpoint(finished_run)
    checkpoint["epoch"] = 1
    save_checkpoint(tmp_path / CHECKPOINT_NAME, checkpoint)
    with pytest.raises(
        ValueError, match=re.escape("holds weights of another model (size mismatch for roi_heads.")
    ) as e:
        train(maskrcnn_small(num_classes=3), recipe=TINY, out=tmp_path, progress=False, resume=True)
    assert "they were trained for num_classes=6" in str(e.value)


def test_resuming_a_finished_run_says_nothing_was_written(finished_run, capsys):
    before = (finished_run / CHECKPOINT_NAME).stat().st_mtime_ns
    assert main(["train", "--out", str(finished_run), *TINY_OPTIONS, "--resume"]) == 0
    assert "already finished its 2 epochs: nothing trained, nothing written" in capsys.readouterr().out
    assert (finished_run / CHECKPOINT_NAME).stat().st_mtime_ns == before


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
        train(recipe=TINY, out=tmp_path, progress=False, resume=True)


# ----- Ctrl-C -----
def test_ctrl_c_stops_between_two_steps_and_the_resume_is_exact(finished_run, tmp_path):
    def press_ctrl_c(step):
        if step.epoch == 2 and step.step == 1:
            signal.raise_signal(signal.SIGINT)  # handled: the step has finished, the loop stops after it

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as error:
        train(recipe=TINY, out=tmp_path, progress=False, on_step=press_ctrl_c)
    assert str(error.value) == (
        f"interrupted at epoch 2, step 1; the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME}); "
        f"resume with --resume (resume=True)"
    )
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C behaves as before once training stops
    assert load_checkpoint(tmp_path)["epoch"] == 1
    resumed = train(recipe=TINY, out=tmp_path, progress=False, resume=True)
    uninterrupted = TrainingTrace.load(finished_run / loop.TRACE_NAME)
    assert [e.train_losses for e in resumed.epochs] == [e.train_losses for e in uninterrupted.epochs]


@pytest.mark.parametrize(
    "epoch, step, out, message",
    [
        (
            1,
            2,
            "runs/x",
            "interrupted at epoch 1, step 2; no checkpoint was written before it (the first is written "
            "after epoch 1); runs/x holds no run yet, so the same command starts it again",
        ),
        (
            1,
            None,
            "runs/x",
            "interrupted after epoch 1; the checkpoint of epoch 1 is kept (runs/x/checkpoint.pt); "
            "resume with --resume (resume=True)",
        ),
        (
            3,
            1,
            None,
            "interrupted at epoch 3, step 1; no checkpoint was written (pass out=FOLDER, --out FOLDER, to "
            "keep one per epoch)",
        ),
    ],
)
def test_what_ctrl_c_says_when_there_is_no_checkpoint_to_resume(epoch, step, out, message):
    assert str(interrupted(epoch, step, Path(out) / CHECKPOINT_NAME if out else None)) == message


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_exits_130_with_how_to_resume(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mrcnn_course", "train", "--out", str(out), *TINY_OPTIONS, "--threads", "1"],
        env={**os.environ, "TQDM_DISABLE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert process.returncode == 130, err
    assert re.fullmatch(
        r"interrupted (at epoch 2, step \d|after epoch 1); the checkpoint of epoch 1 is kept \(.*\); resume with "
        r"--resume \(resume=True\)\n",
        err,
    ), err
    assert "Traceback" not in err and not (out / (CHECKPOINT_NAME + ".tmp")).exists()


def test_warnings_on_the_command_line_are_one_line(capsys):
    with warnings.catch_warnings():
        from mrcnn_course.__main__ import show_warning

        show_warning(ResumeNotExact("another thread count"), ResumeNotExact, "loop.py", 1)
    assert capsys.readouterr().err == "warning: another thread count\n"
