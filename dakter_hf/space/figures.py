"""Pictures the Space shows: overlays, per-class probability maps with a colour bar.

Pure numpy + PIL (no matplotlib), with the colours of `dakter_hf.data.visualize`, so the
Space needs nothing beyond the package. The probability panels follow the paper's
Fig. 2: one heat map per class, a shared 0..1 colour bar on the right. The uncertainty map
is the per-pixel entropy on the same colours, its bar from 0 (certain) to ln C nats (uniform).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dakter_hf.data.raster import NODATA_ID as NODATA  # mask value of pixels the file marked as no-data
from dakter_hf.data.visualize import PALETTE, _heat


DISPLAY_MIN, DISPLAY_MAX = 256, 1024


def display_size(height: int, width: int, smallest: int = DISPLAY_MIN, largest: int = DISPLAY_MAX) -> tuple:
    """(h, w) to show an image at: tiny samples enlarged by an integer factor, big scenes shrunk."""
    longest = max(height, width)
    if longest < smallest:
        factor = -(-smallest // longest)
        return height * factor, width * factor
    if longest > largest:
        ratio = largest / longest
        return max(1, round(height * ratio)), max(1, round(width * ratio))
    return height, width


def resize_for_display(array: np.ndarray, nearest: bool = True) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) at `display_size`; nearest keeps pixels (and class colours) crisp."""
    height, width = array.shape[:2]
    target = display_size(height, width)
    if target == (height, width):
        return array
    enlarging = target[0] > height
    method = Image.NEAREST if (nearest or enlarging) else Image.BILINEAR
    return np.asarray(Image.fromarray(array).resize((target[1], target[0]), method))


def display_overlay(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`overlay` at display size (resized first: a 16-Mpixel scene costs no more than a small one)."""
    return overlay(resize_for_display(grey, nearest=False), resize_for_display(mask, nearest=True))


def class_colours(mask: np.ndarray) -> np.ndarray:
    colours = PALETTE[np.where(mask == NODATA, 0, mask) % len(PALETTE)]
    colours[mask == NODATA] = (96, 96, 96)
    return colours


def overlay(grey: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB uint8: class colours blended over the grey image; class 0 (background/sea) left clear."""
    base = np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)
    paint = (mask != 0)[..., None]
    mixed = np.where(paint, (1 - alpha) * base + alpha * class_colours(mask).astype(np.float32), base)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def colour_bar(height: int, width: int = 14) -> np.ndarray:
    """(height, width, 3) vertical ramp: 1 at the top, 0 at the bottom."""
    ramp = np.linspace(1.0, 0.0, height)[:, None].repeat(width, axis=1)
    return _heat(ramp)


def probability_panel(
    probabilities: np.ndarray, class_names: Sequence[str], title: Optional[str] = None
) -> np.ndarray:
    """(C, H, W) probabilities in [0, 1] -> one RGB picture: a titled heat map per class and a colour bar."""
    classes, height, width = probabilities.shape
    dh, dw = display_size(height, width, smallest=160, largest=384)
    pad, text_h, bar_w, label_w = 6, 20, 14, 30
    # titles go under the maps: Gradio draws the component's label over an image's top-left corner
    canvas = Image.new("RGB", (pad + classes * (dw + pad) + bar_w + label_w + pad, pad + dh + text_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    method = Image.NEAREST if dh >= height else Image.BILINEAR
    for index in range(classes):
        # resize the probabilities, not the colours: cheap for big scenes, exact colours for small ones
        small = np.asarray(Image.fromarray(probabilities[index].astype(np.float32), mode="F").resize((dw, dh), method))
        x = pad + index * (dw + pad)
        canvas.paste(Image.fromarray(_heat(small)), (x, pad))
        name = class_names[index] if index < len(class_names) else f"class {index}"
        draw.text((x, pad + dh + 3), f"p({name})", fill="black", font=font)
    x = pad + classes * (dw + pad)
    canvas.paste(Image.fromarray(colour_bar(dh, bar_w)), (x, pad))
    for value, y in ((1.0, pad), (0.5, pad + dh // 2 - 6), (0.0, pad + dh - 12)):
        draw.text((x + bar_w + 3, y), f"{value:.1f}", fill="black", font=font)
    if title:
        draw.text(
            (canvas.width - pad - draw.textlength(title, font=font), pad + dh + 3), title, fill="dimgray", font=font
        )
    return np.asarray(canvas)


def uncertainty_panel(entropy: np.ndarray, num_classes: int, title: Optional[str] = None) -> np.ndarray:
    """(H, W) entropy in nats (NaN: no data, shown white) -> a heat map with a 0..ln C colour bar in nats."""
    height, width = entropy.shape
    dh, dw = display_size(height, width, smallest=160, largest=512)
    top = float(np.log(max(2, num_classes)))
    pad, text_h, bar_w, label_w = 6, 20, 14, 40
    canvas = Image.new("RGB", (pad + dw + pad + bar_w + label_w + pad, pad + dh + text_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    method = Image.NEAREST if dh >= height else Image.BILINEAR
    small = np.asarray(Image.fromarray(entropy.astype(np.float32), mode="F").resize((dw, dh), method))
    colours = _heat(np.clip(np.nan_to_num(small / top, nan=0.0), 0.0, 1.0))
    colours[np.isnan(small)] = 255
    canvas.paste(Image.fromarray(colours), (pad, pad))
    draw.text((pad, pad + dh + 3), title or "entropy of the class probabilities (nats)", fill="black", font=font)
    x = pad + dw + pad
    canvas.paste(Image.fromarray(colour_bar(dh, bar_w)), (x, pad))
    for value, y in ((top, pad), (top / 2, pad + dh // 2 - 6), (0.0, pad + dh - 12)):
        draw.text((x + bar_w + 3, y), f"{value:.2f}", fill="black", font=font)
    return np.asarray(canvas)


def legend_html(class_names: Sequence[str]) -> str:
    """Coloured squares naming the overlay colours (class 0 is left unpainted)."""
    items = []
    for index, name in enumerate(class_names):
        if index == 0:
            items.append(f"<span style='margin-right:1em'>{name}: not painted</span>")
            continue
        r, g, b = (int(v) for v in PALETTE[index % len(PALETTE)])
        items.append(
            "<span style='margin-right:1em'><span "
            f"style='display:inline-block;width:0.9em;height:0.9em;background:rgb({r},{g},{b});border:1px solid "
            f"#444;vertical-align:middle'></span> {name}</span>"
        )
    return "<div>" + "".join(items) + "</div>"
