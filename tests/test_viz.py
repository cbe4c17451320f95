"""Labelled PNG figures: the label column fits its text and never covers the images."""

import numpy as np
import torch
from PIL import Image

from analytic_denoisers.viz import image_grid, save_labelled_rows


def test_label_column_fits_the_widest_label(tmp_path):
    images = torch.rand(3, 1, 5, 5) * 2 - 1
    short = np.asarray(Image.open(save_labelled_rows([("a", images)], tmp_path / "a.png", scale=1)))
    label = "x̂0 at step 17 (σ=0.002)"
    long = np.asarray(Image.open(save_labelled_rows([(label, images)], tmp_path / "b.png", scale=1)))
    strip = image_grid(images, nrow=3)
    assert long.shape[1] > short.shape[1] + 100
    for fig in (short, long):  # the images sit unchanged right of the labels
        np.testing.assert_array_equal(fig[:, fig.shape[1] - strip.shape[1]:], strip)
    text = long[:, :long.shape[1] - strip.shape[1]]
    assert (text < 128).any() and (text[:, -6:] == 255).all()  # text drawn, a white margin before the images
