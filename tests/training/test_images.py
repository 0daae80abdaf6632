"""images.to_image_tensor: every usual form of an image, files, grayscale and alpha, bad input explained.
Also bad input: a 16-bit PNG is read at its level.
"""

import numpy as np
import pytest
import torch
from PIL import Image

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
    decoded = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))  # JPEG is lossy: compare with PIL's
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
