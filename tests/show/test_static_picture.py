"""static_picture: an explorer (and the training viewer: test_widgets.py), displayed, also leaves what
it shows as a PNG and text, so that an executed copy of a notebook (nbconvert --execute) and its HTML
show the picture where no kernel runs. The last test runs a real kernel (slow)."""

import base64
import io
import re

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from PIL import Image

from mrcnn_course.show import explorers
from mrcnn_course.show.static_picture import plain_text, stacked_png
from mrcnn_course.show.viz import figure_png, new_figure

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BOXES = torch.tensor([[10.0, 10, 60, 60], [14, 12, 62, 58], [70, 70, 110, 110]])


def png(width: float, height: float) -> bytes:
    return figure_png(new_figure(width, height))


def size_of(picture: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(picture)).size


def test_stacked_png_puts_the_pictures_one_above_the_other():
    top, bottom = png(2, 1), png(3, 2)
    (w1, h1), (w2, h2) = size_of(top), size_of(bottom)
    assert size_of(stacked_png([top, bottom])) == (max(w1, w2), h1 + h2)


def test_plain_text_drops_tags_and_decodes_entities():
    assert plain_text("<b style='color:#b00'>a &lt;b&gt; c</b> ") == "a <b> c"


def test_an_explorer_displays_its_picture_and_summary_beside_the_widget_view():
    explorer = explorers.nms_explorer(torch.rand(3, 128, 128), BOXES, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    explorer.controls["iou_threshold"].value = 0.3  # what it shows now, not what it first drew
    bundle = explorer._repr_mimebundle_()
    assert WIDGET_VIEW in bundle  # a live JupyterLab still renders the widget
    assert base64.b64decode(bundle["image/png"]) == stacked_png([explorer.picture.value])
    assert bundle["text/plain"] == plain_text(explorer.summary.value) and "keeps 2 of 3 boxes" in bundle["text/plain"]


@pytest.mark.slow
def test_an_executed_notebook_and_its_html_show_the_explorers_picture(tmp_path):
    cells = [
        "import torch\nfrom mrcnn_course.show import explorers\nfrom mrcnn_course.training import data",
        "image, target = data.make_scene(3, image_size=128)\nexplorers.anchor_explorer(image)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute(cwd=str(tmp_path))
    [output] = nb.cells[1].outputs
    assert output.output_type == "execute_result" and {WIDGET_VIEW, "image/png", "text/plain"} <= set(output.data)
    assert "P4: 8x8 locations" in output.data["text/plain"]
    # nbconvert --to html renders a widget view only from widget state saved in the notebook (its
    # JavaScript then rebuilds the widget); without that state, as in a viewer that runs no widget code,
    # it falls back to the PNG
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter().from_notebook_node(nb)
    [shown] = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', body)
    assert shown.strip() == output.data["image/png"].strip()
