"""Jacobian rows of any denoiser by autograd: ``dD(x, sigma)[m] / dx`` for chosen output pixels.

A denoiser's Jacobian says which input pixels each output pixel depends on. Lukoianov et al.
(arXiv 2509.09672) compare a network's rows with the Wiener filter of the data; Niedoba et al.
(arXiv 2411.19339) threshold a network's mean absolute rows into the patches of PSPC-Flex
(:mod:`.flex`). Both need the rows of a black box ``f(x, sigma)``: one forward pass, then one
reverse-mode backward pass per output pixel, which gives that pixel's row for every image of the
batch at once (the full Jacobian of d-pixel images: d backward passes). This assumes that the
denoiser treats the images of a batch independently (every denoiser of this package does; a
network with batch statistics in train mode does not).

Measured alternatives were slower on the CPU (the shipped 28 x 28 UNet, 16 images, 2 cores: 25
ms per pixel for this loop, 45-60 ms for backward passes vectorised over 16-64 pixels with
``is_grads_batched``, 90 ms for forward and backward passes over 16 copies of the batch).
"""

import torch

from ..core.contract import as_denoise_fn
from ..core.validation import as_images


def jacobian_rows(denoiser, x, sigma, pixels=None):
    """Rows ``dD(x, sigma)[n, m] / dx[n]`` for flat output indices ``m`` in ``pixels``.

    Parameters
    ----------
    denoiser : object with ``denoise(x, sigma)``, or a callable ``f(x, sigma)``, that lets
        autograd reach ``x``
    x : Tensor of shape (N, C, H, W), the noisy inputs
    sigma : float, or Tensor of shape (N,)
    pixels : sequence of int, flat indices into ``C * H * W`` (default: all of them)

    Returns
    -------
    Tensor of shape (N, len(pixels), C * H * W), in the dtype of ``x``.
    """
    x = as_images(x).detach().clone().requires_grad_(True)
    n, d = len(x), x[0].numel()
    idx = list(range(d)) if pixels is None else [int(m) for m in pixels]
    if any(not 0 <= m < d for m in idx):
        raise ValueError(f"pixels must be flat indices in [0, {d}), got {idx}")
    with torch.enable_grad():
        out = as_denoise_fn(denoiser)(x, sigma).reshape(n, -1)
        if not out.requires_grad:
            raise ValueError(f"{type(denoiser).__name__} does not let autograd reach its input")
        rows = [torch.autograd.grad(out[:, m].sum(), x, retain_graph=True)[0].reshape(n, d) for m in idx]
    return torch.stack(rows, 1) if rows else x.new_zeros(n, 0, d)
