"""The shipped small model, trained by the course's default recipe, and how it was made.

    model = load_pretrained_small()                   # eval mode, ready: model([image])
    recipe = pretrained_recipe()                      # the command, seed, recipe, versions, final figures

mrcnn_course/training/pretrained/ holds maskrcnn_small.pt (the state_dict in float16, half the size; the
weights are widened back to float32 when loaded) and recipe.json beside it. A test checks that
recipe.json's recipe and model configuration are today's defaults, so the shipped model cannot
silently drift away from what `python -m mrcnn_course train` would train.
"""

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from mrcnn_course.model.maskrcnn import MaskRCNN, SmallConfig, maskrcnn_small
from mrcnn_course.training import data
from mrcnn_course.training.checkpoints import load_checkpoint, load_model_state
from mrcnn_course.training.recipe import Recipe, recipe_scenes

FOLDER = Path(__file__).parent / "pretrained"
WEIGHTS = "maskrcnn_small.pt"
RECIPE = "recipe.json"
HELD_OUT_EPOCH = 9_999  # dataset_seed(seed, 9999): scenes no run of fewer epochs trains or validates on


def model_config_dict(config: SmallConfig | None = None) -> dict:
    """SmallConfig as JSON-ready data (the block class by name)."""
    values = asdict(config or SmallConfig())
    values["backbone"]["block"] = values["backbone"]["block"].__name__
    return json.loads(json.dumps(values))


def small_model() -> MaskRCNN:
    """A new maskrcnn_small for every class of data.CLASSES."""
    return maskrcnn_small(num_classes=len(data.CLASSES))


def model_from_checkpoint(path: str | Path) -> tuple[MaskRCNN, Recipe]:
    """The model (eval mode) and recipe of a train checkpoint; a bare state_dict gets the default Recipe."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds no model weights (a state_dict of tensors): pass a checkpoint written by "
            f"`python -m mrcnn_course train`"
        )
    recipe = Recipe(**checkpoint["recipe"]) if "recipe" in checkpoint else Recipe()
    model = small_model()
    load_model_state(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, path)
    return model.eval(), recipe


def load_pretrained_small() -> MaskRCNN:
    """The shipped maskrcnn_small (6 classes: data.CLASSES), in eval mode, weights in float32."""
    path = FOLDER / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall the package (pip install -e .), or train your own "
            f"with `python -m mrcnn_course train --out runs/mine`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = small_model()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def pretrained_recipe() -> dict:
    """recipe.json: command, seed, recipe, model configuration, versions, final figures."""
    return json.loads((FOLDER / RECIPE).read_text())


def export_pretrained(checkpoint_path: str | Path, command: str, folder: Path = FOLDER) -> Path:
    """Write a finished run's weights (float16) and recipe.json into `folder`, with the figures of the
    float16 weights on 200 held-out scenes, so the shipped figures are the shipped model's."""
    import torchvision  # for its version only (importing mrcnn_course does not import torchvision)

    from mrcnn_course.training import evaluation

    checkpoint = load_checkpoint(checkpoint_path)
    recipe = Recipe(**checkpoint["recipe"])
    if checkpoint["epoch"] != recipe.epochs:
        raise ValueError(
            f"{checkpoint_path} stopped after epoch {checkpoint['epoch']} of {recipe.epochs}: "
            f"finish the run (--resume) before shipping it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
    torch.save(half, folder / WEIGHTS)
    model, _ = model_from_checkpoint(folder / WEIGHTS)
    held_out = evaluation.evaluate(model, recipe_scenes(recipe, HELD_OUT_EPOCH, 200))
    last = checkpoint["trace"]["epochs"][-1]
    record = {
        "command": command,
        "seed": recipe.seed,
        "recipe": recipe.to_dict(),
        "model": model_config_dict(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cores": os.cpu_count(),  # torch used one thread per core (the command sets no --threads)
        "seconds_with_evaluation": round(sum(e["seconds"] for e in checkpoint["trace"]["epochs"]), 1),
        "final_epoch": {
            k: last[k]
            for k in ("train_losses", "val_losses", "accuracy", "box_map", "box_map50", "mask_map", "mask_map50")
        },
        "held_out_200": {
            k: round(held_out[k], 4) for k in ("accuracy", "box_map", "box_map50", "mask_map", "mask_map50")
        },
    }
    (folder / RECIPE).write_text(json.dumps(record, indent=1) + "\n")
    return folder
