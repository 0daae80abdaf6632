"""Images and detections as compact JSON-ready text: what a training trace stores per epoch.

    text = encode_image(image)                 # float Tensor[3, H, W] in [0, 1] -> PNG, base64
    encoded = encode_detections(detections)    # boxes, labels, (scores,) masks as COCO run-length text
    detections = decode_detections(encoded)    # and back

Shapes:
    T detections;  H, W the image size
Masks are stored as COCO run-length encodings (pycocotools), thresholded at MASK_THRESHOLD: a 128x128
mask takes tens of characters instead of 16 KB. Boxes are rounded to 0.1 px and scores to 0.001.
"""

import base64
import io

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from torch import Tensor

from mrcnn_course.model.mask_head import MASK_THRESHOLD


def encode_image(image: Tensor) -> str:
    """Float Tensor[3, H, W] in [0, 1] -> PNG as base64 text (8 bits per channel)."""
    array = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(text: str) -> Tensor:
    """encode_image's inverse: float Tensor[3, H, W] in [0, 1]."""
    array = np.array(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def encode_detections(detections: dict[str, Tensor]) -> dict:
    """Model output or a target -> JSON-able dict: boxes rounded to 0.1 px, scores to 0.001, masks as RLE.

    Masks may be probabilities [T, 1, H, W] (model output; thresholded at MASK_THRESHOLD) or uint8 [T, H, W].
    """
    masks = detections["masks"]
    if masks.dim() == 4:  # (T, 1, H, W) probabilities
        masks = masks[:, 0] > MASK_THRESHOLD
    masks = masks.detach().cpu().to(torch.uint8)
    height, width = masks.shape[-2:]
    # pycocotools wants a Fortran-ordered (H, W, T) uint8 array
    rles = coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy())) if len(masks) else []
    encoded = {
        "boxes": [[round(float(v), 1) for v in box] for box in detections["boxes"].detach().cpu()],
        "labels": [int(v) for v in detections["labels"]],
        "masks": [rle["counts"].decode("ascii") for rle in rles],
        "size": [int(height), int(width)],
    }
    if "scores" in detections:
        encoded["scores"] = [round(float(v), 3) for v in detections["scores"]]
    return encoded


def decode_detections(encoded: dict) -> dict[str, Tensor]:
    """encode_detections' inverse: boxes float [T, 4], labels int64 [T], (scores [T],) masks uint8 [T, H, W]."""
    height, width = encoded["size"]
    rles = [{"size": [height, width], "counts": counts.encode("ascii")} for counts in encoded["masks"]]
    masks = (
        torch.from_numpy(coco_mask.decode(rles)).permute(2, 0, 1).contiguous()
        if rles  # (H, W, T) -> (T, H, W)
        else torch.zeros(0, height, width, dtype=torch.uint8)
    )
    decoded = {
        "boxes": torch.tensor(encoded["boxes"], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(encoded["labels"], dtype=torch.int64),
        "masks": masks,
    }
    if "scores" in encoded:
        decoded["scores"] = torch.tensor(encoded["scores"], dtype=torch.float32)
    return decoded
