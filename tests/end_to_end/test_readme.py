"""Every ```python block of README.md runs as written, each in a fresh interpreter.

A block that needs a file nobody has gets a stand-in of the same kind in its working folder: the COCO
checkpoint `maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth` is a state_dict of torchvision's Mask R-CNN with
torchvision's COCO layout (FrozenBatchNorm2d, random weights), and `photo.jpg` a generated scene.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
COCO_CHECKPOINT = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"

pytestmark = pytest.mark.slow


def stand_ins(folder: Path, block: str) -> None:
    """The files a block names that nobody has: made here, of the same layout."""
    if COCO_CHECKPOINT in block:
        body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)  # COCO weights' layout
        torch.save(TVMaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91).state_dict(), folder / COCO_CHECKPOINT)
    if "photo.jpg" in block:
        from mrcnn_course.training import data

        image, _ = data.dog_and_cat_scene()
        torchvision.io.write_jpeg((image * 255).to(torch.uint8), str(folder / "photo.jpg"))


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_a_readme_block_runs_in_a_fresh_interpreter(block, tmp_path):
    stand_ins(tmp_path, block)
    environment = {**os.environ, "TQDM_DISABLE": "1", "MRCNN_COURSE_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"this README block failed:\n{block}\n{result.stderr[-3000:]}"
