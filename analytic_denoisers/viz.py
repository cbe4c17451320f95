"""Image grids and labelled figures as PNG files; :func:`pyplot` for matplotlib figures."""

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .core.compat import import_torchvision


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi=110):
    """Lay out a matplotlib figure (unless it has a layout engine of its own), write it as PNG,
    close it; returns ``path``."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def label_font(size=11):
    """Matplotlib's DejaVu Sans for PNG labels: it has the Greek letters and combining accents
    (``σ``, ``x̂0``) that PIL's built-in font lacks."""
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def image_grid(images, nrow=8, padding=2):
    """Tile images in [-1, 1] into one uint8 array.

    Parameters
    ----------
    images : Tensor of shape (N, C, H, W), C in {1, 3}
    nrow : int, images per row

    Returns
    -------
    ndarray of shape (H', W', 3), uint8.
    """
    make_grid = import_torchvision().utils.make_grid
    images = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    return (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _grid_image(images, nrow, scale):
    img = Image.fromarray(image_grid(images, nrow=nrow))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale != 1 else img


def _save(img, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return Path(path)


def save_grid(images, path, nrow=8, scale=1):
    """Write images in [-1, 1], shape (N, C, H, W), as one PNG grid; ``scale`` enlarges pixels."""
    return _save(_grid_image(images, nrow, scale), path)


def save_labelled_rows(rows, path, scale=2, label_width=None, title=None):
    """Write a figure with one labelled row of images per entry.

    Parameters
    ----------
    rows : list of (str, Tensor of shape (K, C, H, W)) pairs, images in [-1, 1]
    path : output PNG path
    scale : int, pixel enlargement
    label_width : int, width in pixels of the label column (default: the widest label's)
    title : str, optional, a line of text above the rows
    """
    font = label_font()
    strips = [_grid_image(imgs, len(imgs), scale) for _, imgs in rows]
    if label_width is None:
        label_width = 12 + max(int(font.getlength(label)) for label, _ in rows)
    top = 22 if title else 0
    width = max(label_width + max(s.width for s in strips), int(font.getlength(title or "")) + 8)
    canvas = Image.new("RGB", (width, top + sum(s.height for s in strips)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    y = top
    for (label, _), strip in zip(rows, strips):
        canvas.paste(strip, (label_width, y))
        draw.text((4, y + strip.height // 2), label, fill="black", font=font, anchor="lm")
        y += strip.height
    return _save(canvas, path)
