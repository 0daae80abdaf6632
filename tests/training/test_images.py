"""images.to_image_tensor: every usual form of an image, files, grayscale and alpha, bad input explained.
Also: a 16-bit PNG is read at its level, a photo upright as its EXIF says, a file claiming too many pixels
refused before it is decoded.
"""

import re
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from mrcnn_course.training import images

PIXELS = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)  # (H, W, 3)
EXPECTED = torch.from_numpy(PIXELS).permute(2, 0, 1).float() / 255  # (3, H, W)


IN_MEMORY = {
    "PIL image": Image.fromarray(PIXELS),
    "numpy (H, W, 3)": PIXELS,
    "uint8 tensor (H, W, 3)": torch.from_numpy(PIXELS),
    "uint8 tensor (3, H, W)": torch.from_numpy(PIXELS).permute(2, 0, 1),
    "float tensor": EXPECTED.double(),
}


@pytest.mark.parametrize("kind", list(IN_MEMORY))
def test_to_image_tensor_takes_every_usual_form(kind):
    image = images.to_image_tensor(IN_MEMORY[kind])
    assert image.dtype == torch.float32
    assert torch.equal(image, EXPECTED)


def test_to_image_tensor_reads_files(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "a.png")
    assert torch.equal(images.to_image_tensor(tmp_path / "a.png"), EXPECTED)
    Image.fromarray(PIXELS).save(tmp_path / "a.jpg", quality=95)
    decoded = np.array(Image.open(tmp_path / "a.jpg").convert("RGB"))  # JPEG is lossy: compare with PIL's
    assert torch.equal(
        images.to_image_tensor(str(tmp_path / "a.jpg")), torch.from_numpy(decoded).permute(2, 0, 1).float() / 255
    )


def test_to_image_tensor_converts_grayscale_and_rgba(tmp_path):
    gray = Image.fromarray(PIXELS[..., 0])  # mode L
    for image in (images.to_image_tensor(gray), images.to_image_tensor(PIXELS[..., 0])):
        assert image.shape == (3, 6, 9) and torch.equal(image[0], image[2])
        assert torch.equal(image[0], EXPECTED[0])
    rgba = np.concatenate([PIXELS, np.full((6, 9, 1), 128, dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    for image in (
        images.to_image_tensor(tmp_path / "rgba.png"),
        images.to_image_tensor(rgba),
        images.to_image_tensor(torch.from_numpy(rgba)),
    ):
        assert torch.equal(image, EXPECTED)  # alpha dropped


def test_to_image_tensor_explains_bad_input(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"cannot read .*corrupt.png as an image"):
        images.to_image_tensor(corrupt)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match="cannot read"):
        images.to_image_tensor(truncated)
    with pytest.raises(FileNotFoundError, match="no image file"):
        images.to_image_tensor(tmp_path / "missing.png")
    cases = [
        (PIXELS.astype(np.float64), "must be uint8"),
        (np.zeros((6, 9, 5), np.uint8), r"\(H, W, 3\)"),
        (torch.rand(3, 4, 5) * 2, r"\[0, 1\].*divide"),
        (torch.full((3, 4, 5), float("nan")), r"\[0, 1\]"),
        (torch.zeros(2, 4, 5), "shape"),
        (torch.zeros(4, 5, 3, dtype=torch.int32), "uint8 or float"),
        (torch.zeros(0, 3), "shape"),
        ([[1, 2, 3]], "cannot make an image of a list"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            images.to_image_tensor(bad)


def test_a_16_bit_png_is_read_at_its_level(tmp_path):
    levels = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "gray16.png")
    image = images.to_image_tensor(tmp_path / "gray16.png")
    assert image.shape == (3, 2, 2)
    assert torch.allclose(image[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]), atol=1e-4)
    assert torch.equal(image[0], image[2])  # gray in all three channels


def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    """A phone saves a portrait photo as landscape pixels and EXIF orientation 6 (turn 90 degrees clockwise)."""
    blocks = np.kron(PIXELS, np.ones((8, 8, 1), dtype=np.uint8))  # (48, 72, 3): 8x8 blocks survive JPEG
    exif = Image.Exif()
    exif[0x0112] = 6  # the EXIF Orientation tag
    Image.fromarray(blocks).save(tmp_path / "portrait.jpg", quality=95, subsampling=0, exif=exif)  # 4:4:4 colour
    image = images.to_image_tensor(tmp_path / "portrait.jpg")
    assert image.shape == (3, 72, 48)  # upright: taller than wide
    upright = torch.from_numpy(np.rot90(blocks, k=-1).copy()).permute(2, 0, 1).float() / 255  # clockwise
    assert (image - upright).abs().mean() < 0.02  # JPEG is lossy; turned the other way it is off by about 0.4
    Image.fromarray(blocks).save(tmp_path / "plain.jpg", quality=95)
    assert images.to_image_tensor(tmp_path / "plain.jpg").shape == (3, 48, 72)  # no tag: as stored


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, followed by a few bytes of image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(16))) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "width, height, claimed",
    [
        (9000, 9000, "9000 x 9000 (width x height) = 81,000,000 pixels"),  # above the course's limit
        (10000, 10000, "10000 x 10000 (width x height) = 100,000,000 pixels"),  # PIL would warn
        (20000, 20000, "400,000,000 pixels"),  # above twice PIL's own limit too: PIL counts them
    ],
)
def test_a_file_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch, width, height, claimed):
    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(width, height))
    message = (
        f"{bomb} claims {claimed} in its header, more than the {images.MAX_IMAGE_PIXELS:,} the course reads "
        "(mrcnn_course.training.images.MAX_IMAGE_PIXELS): it was not decoded. If it is a real image, scale it down"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning is not passed on: the refusal says it all
        with pytest.raises(ValueError, match=re.escape(message)):
            images.to_image_tensor(bomb)
