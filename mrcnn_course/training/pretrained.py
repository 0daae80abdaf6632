"""The shipped small model, trained by the course's default recipe, and how it was made.

    model = load_pretrained_small()                   # eval mode, ready: model([image])
    recipe = pretrained_recipe()                      # the command, seed, recipe, versions, final figures
    reference_figures(fit.recipe)                     # the reference trained by a recipe of fit_to_budget's menu

mrcnn_course/training/pretrained/ holds maskrcnn_small.pt (the state_dict in float16, half the size; the
weights are widened back to float32 when loaded) and recipe.json beside it. A test checks that
recipe.json's recipe and model configuration are today's defaults, so the shipped model cannot
silently drift away from what `python -m mrcnn_course train` would train. reference_figures.json holds the
held-out figures of the reference trained by each recipe of budget.fit_to_budget's menu (the whole recipe's are
the shipped model's; a test re-trains the smallest), so that a learner's model is compared with the reference
trained as long as it was.
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
            for k in (
                "train_losses",
                "val_losses",
                "recall",
                "precision",
                "box_map",
                "box_map50",
                "mask_map",
                "mask_map50",
            )
        },
        "held_out_200": {
            k: round(held_out[k], 4) for k in ("recall", "precision", "box_map", "box_map50", "mask_map", "mask_map50")
        },
    }
    (folder / RECIPE).write_text(json.dumps(record, indent=1) + "\n")
    return folder


# The reference's held-out figures for each recipe of budget.fit_to_budget's menu (benchmarks/reference_figures.py
# writes them), so that the capstone compares the learner's model with the reference trained by the same recipe
REFERENCE_FIGURES = "reference_figures.json"
HELD_OUT_SCENES = 100  # the capstone's held-out scenes: the first of dataset_seed(seed, HELD_OUT_EPOCH)
VALIDATION_FIELDS = ("val_images", "shown_images")  # what validates a run, not what trains it


def training_recipe(recipe: Recipe) -> dict:
    """The fields of `recipe` that decide the trained weights: all but VALIDATION_FIELDS (validation runs
    without gradients, on its own random stream, so it changes neither the weights nor the training's draws)."""
    return {k: v for k, v in recipe.to_dict().items() if k not in VALIDATION_FIELDS}


def held_out_figures(model: MaskRCNN, recipe: Recipe, scenes: int = HELD_OUT_SCENES) -> dict[str, float]:
    """evaluation.evaluate's figures (mAPs and the others, rounded to 4 places) of `model` on the first `scenes`
    held-out scenes of the recipe's kind."""
    from mrcnn_course.training import evaluation  # pycocotools: only when evaluating

    result = evaluation.evaluate(model, recipe_scenes(recipe, HELD_OUT_EPOCH, scenes))
    return {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}


def reference_figures(recipe: Recipe) -> dict | None:
    """The shipped figures of the reference trained by `recipe` (validation settings aside): {"steps", "threads",
    "held_out": held_out_figures on HELD_OUT_SCENES scenes}, or None when the course ships none for it (a recipe
    that is not a share of the default one's scenes per epoch, or autograding's short run)."""
    path = FOLDER / REFERENCE_FIGURES
    if not path.is_file():
        return None
    wanted = training_recipe(recipe)
    return next((run for run in json.loads(path.read_text())["runs"] if run["recipe"] == wanted), None)


def write_reference_figures(runs: list[dict], command: str, folder: Path = FOLDER) -> Path:
    """Write REFERENCE_FIGURES: `runs` (each {"recipe": training_recipe(...), "steps", "threads", "held_out"})
    with the command that made them and the versions."""
    import torchvision  # for its version only

    record = {
        "command": command,
        "held_out_scenes": HELD_OUT_SCENES,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "runs": runs,
    }
    path = folder / REFERENCE_FIGURES
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


LEVEL = 0.02  # held-out mask mAP@0.5: two runs of one recipe whose components compute the same, end this close
FEW_STEPS = 300  # below this many steps both models still learn fast, and runs end further apart


def compare_with_reference(yours: dict, recipe: Recipe, epochs_trained: int, scenes: int) -> str:
    """A sentence on `yours` (evaluation.evaluate's figures on the first `scenes` held-out scenes of a model
    trained `epochs_trained` epochs by `recipe`) against the reference trained by the same recipe; says plainly
    when there is no fair comparison to make (a run cut short, another recipe, other scenes)."""
    if epochs_trained < recipe.epochs:
        return (
            f"Training stopped after epoch {epochs_trained} of {recipe.epochs} (the time limit): the reference's "
            f"figures are for all {recipe.epochs} epochs, so there is no fair comparison. Give fit_to_budget more "
            f"time (seconds=...) and train again."
        )
    reference = reference_figures(recipe)
    if reference is None or scenes != HELD_OUT_SCENES:
        return (
            "The course ships the reference's figures for the recipes of fit_to_budget's menu, on "
            f"{HELD_OUT_SCENES} held-out scenes; this run is not one of them (autograding's short run, or a recipe "
            "you changed): compare it with the shipped model, trained by the whole recipe."
        )
    mine, theirs = yours["mask_map50"], reference["held_out"]["mask_map50"]
    said = f"Mask mAP@0.5 {mine:.3f} against {theirs:.3f} for the reference trained by the same recipe"
    if abs(mine - theirs) <= LEVEL:
        said += f": level (within {LEVEL})."
    elif mine < theirs:
        said += (
            f": {theirs - mine:.3f} below. Something of yours trains differently from the reference: the list "
            f"at the top shows which of your components ran. Train again with half of them "
            f"(grading.load_components((name, ...)) loads only those) and halve again to find it; each lesson's "
            f"cell that plugs your functions into the model shows whether they change its outputs."
        )
    else:
        said += f": {mine - theirs:.3f} above."
    rough = rough_comparison(recipe.total_steps)
    return f"{said} {rough}" if rough else said


def rough_comparison(steps: int) -> str:
    """A warning when a run of `steps` steps is too short for a close comparison with the reference trained
    alike ("" from FEW_STEPS steps on)."""
    if steps >= FEW_STEPS:
        return ""
    return (
        f"{steps} steps is short: both models are still improving fast, and two runs of the same code can end up "
        f"to 0.1 apart in mask mAP@0.5 (on another number of threads torch adds numbers in another order, and "
        f"those rounding differences grow), so treat the comparison with the reference trained alike as rough; "
        f"from {FEW_STEPS} steps on it is close."
    )
