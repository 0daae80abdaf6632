"""Images from anywhere as the model's input: a file, a PIL image, a numpy array or a tensor.

    image = to_image_tensor("photo.jpg")        # float32 Tensor[3, H, W] in [0, 1]
    image = to_image_tensor(pil_image)          # or a uint8 array (H, W, 3), or a tensor

Shapes:
    H, W    image height and width
    image   float32 Tensor[3, H, W] in [0, 1], the form every dataset of the course gives

Grayscale becomes three equal channels, an alpha channel is dropped, a 16-bit grayscale PNG is read at its
level. A file is read upright, as its EXIF orientation says (a phone stores a portrait photo as landscape
pixels plus that tag, and every image viewer turns it); a PIL image, an array or a tensor is taken as its
pixels are. A file whose header claims more than MAX_IMAGE_PIXELS pixels is refused before it is decoded.
Left out: colour profiles, video.
"""

import os
import re
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # how PIL opens a 16-bit grayscale PNG (I: older Pillows)

# The most pixels an image file may claim in its header. A few hundred bytes of PNG can claim gigapixels (a
# "decompression bomb") and the float32 tensor takes 12 bytes a pixel: 8192 x 8192 is about 0.8 GB, above
# any camera's photo; the model scales every image down to its max_size anyway. PIL's own limit is higher
# (a warning from Image.MAX_IMAGE_PIXELS, an error from twice that): the course's speaks first.
MAX_IMAGE_PIXELS = 8192 * 8192


def to_image_tensor(image: "Image.Image | np.ndarray | Tensor | str | os.PathLike") -> Tensor:
    """float32 Tensor[3, H, W] in [0, 1] from a PIL image, a uint8 numpy array (H, W, 3), an image file,
    or a tensor: uint8 (H, W, 3) or (3, H, W), float (3, H, W) in [0, 1].

    Grayscale is repeated into 3 channels; an alpha channel (RGBA) is dropped; 16-bit grayscale (a 16-bit PNG)
    is read at its level (value / 65535). A uint8 tensor whose first
    dimension is 1, 3 or 4 is read as channels-first. Anything else raises a ValueError that says what was
    wrong (a missing file: FileNotFoundError).
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(Path(image))
    if isinstance(image, Image.Image) and image.mode in SIXTEEN_BIT_MODES:
        # convert("RGB") would clip every value above 255 to white: scale the 16 bits to [0, 1] instead
        pixels = np.asarray(image).astype(np.float32)  # (H, W)
        brightest = float(np.max(pixels)) if pixels.size else 0.0
        if brightest > 65535:
            raise ValueError(f"a {image.mode} image holds values up to {brightest:.0f}: expected 16-bit pixels")
        image = torch.from_numpy(pixels / 65535)  # (H, W) gray in [0, 1]
    elif isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))  # L, LA, P, RGBA, CMYK, ... -> RGB
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(
                f"a numpy image must be uint8 (H, W, 3), got dtype {image.dtype}: convert it, e.g. "
                f"(array * 255).round().astype(np.uint8) for values in [0, 1]"
            )
        if not (image.ndim == 2 or image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
            raise ValueError(
                f"a numpy image must be (H, W, 3) (or (H, W) gray, (H, W, 4) RGBA), got shape {image.shape}"
            )
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0) if image.ndim == 3 else image))
    if not isinstance(image, Tensor):
        raise ValueError(
            f"cannot make an image of a {type(image).__name__}: give a PIL image, a uint8 numpy "
            f"array (H, W, 3), a tensor or a path to an image file"
        )
    if image.dim() == 2:
        image = image[None]  # (H, W) grayscale -> (1, H, W)
    elif image.dim() == 3 and image.dtype == torch.uint8 and image.shape[0] not in (1, 3, 4):
        image = image.permute(2, 0, 1)  # uint8 (H, W, C) -> (C, H, W)
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.float() / 255
    elif image.is_floating_point():
        low, high = image.min().item(), image.max().item()
        if not (low >= 0 and high <= 1):  # written so that NaN fails too
            raise ValueError(
                f"a float image must lie in [0, 1], this one spans [{low:.3g}, {high:.3g}]: divide 0-255 values by 255"
            )
        image = image.float()
    else:
        raise ValueError(f"an image tensor must be uint8 or float, got {image.dtype}")
    image = image[:3] if image.shape[0] == 4 else image.expand(3, -1, -1)  # drop alpha; gray -> RGB
    return image.contiguous()


def read_image(path: Path) -> Image.Image:
    """The image file at `path`, upright as its EXIF orientation says, decoded now (a corrupt file fails here,
    and a file claiming more than MAX_IMAGE_PIXELS pixels fails before decoding, each with a ValueError that
    names the file)."""
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with warnings.catch_warnings():
            # PIL warns of a possible decompression bomb above its limit: the course's lower limit refuses it below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            file = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as error:  # PIL's error, above twice its limit: the pixels it counted
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        refuse_too_many_pixels(path, f"{int(claimed[1]):,} pixels" if claimed else "more pixels than PIL reads")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        refuse_unreadable(path, error)
    with file:
        width, height = file.size
        if width * height > MAX_IMAGE_PIXELS:
            refuse_too_many_pixels(path, f"{width} x {height} (width x height) = {width * height:,} pixels")
        try:
            file.load()  # Image.open only reads the header: without load() a corrupt file would fail later
            return ImageOps.exif_transpose(file)  # a copy, turned upright (the tag removed)
        except (OSError, SyntaxError, ValueError) as error:
            refuse_unreadable(path, error)


def refuse_too_many_pixels(path: Path, size: str) -> NoReturn:
    raise ValueError(
        f"{path} claims {size} in its header, more than the {MAX_IMAGE_PIXELS:,} the course reads "
        f"(mrcnn_course.training.images.MAX_IMAGE_PIXELS): it was not decoded. If it is a real image, "
        f"scale it down first (the model resizes every image to its max_size anyway)"
    ) from None


def refuse_unreadable(path: Path, error: Exception) -> NoReturn:
    raise ValueError(
        f"cannot read {path} as an image ({error}): is it a PNG or JPEG file? "
        f"Open it in an image viewer, or export it again"
    ) from None
