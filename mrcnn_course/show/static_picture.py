"""A widget's picture for where no kernel runs: an executed copy of a notebook (nbconvert --execute),
nbgrader's feedback HTML, a notebook viewer.

A widget's output in a notebook is only a reference to a model that lives in the kernel; without the
kernel (and without saved widget state) those renderers show nothing for it. StaticPicture adds to
the widget's display data what it shows at that moment: its pictures, stacked into one PNG
(image/png), and its summary in words (text/plain). A live JupyterLab still renders the widget
itself (it prefers the widget view); nbconvert skips a widget view whose state is not saved and
falls back to the PNG.

Left out: keeping the static picture in step after the cell ran (a notebook's output is saved as it
was displayed; moving a slider later changes the live widget only).
"""

import base64
import html
import io
import re

from PIL import Image

TAG = re.compile(r"<[^>]+>")


def stacked_png(pictures: list[bytes]) -> bytes:
    """PNG images (bytes), one above the other on white, left-aligned, as one PNG."""
    images = [Image.open(io.BytesIO(picture)).convert("RGB") for picture in pictures]
    stacked = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        stacked.paste(image, (0, top))
        top += image.height
    buffer = io.BytesIO()
    stacked.save(buffer, format="PNG")
    return buffer.getvalue()


def plain_text(markup: str) -> str:
    """An ipywidgets.HTML value as plain text: tags dropped, entities decoded."""
    return html.unescape(TAG.sub("", markup)).strip()


class StaticPicture:
    """Mixin for an ipywidgets widget (put it first: class Explorer(StaticPicture, widgets.VBox)).

    The widget says what it shows with static_pictures() (PNG bytes, empty ones skipped) and
    static_text(); its display data then carries them beside the widget view."""

    def static_pictures(self) -> list[bytes]:
        raise NotImplementedError

    def static_text(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]  # the widget's: text/plain and the view
        pictures = [picture for picture in self.static_pictures() if picture]
        if pictures:
            bundle["image/png"] = base64.b64encode(stacked_png(pictures)).decode("ascii")
        text = self.static_text()
        if text:
            bundle["text/plain"] = text
        return bundle
