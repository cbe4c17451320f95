"""Per-image seeded noise: image i depends only on its own seed, at any batch size or device."""

import torch


def seeded_noise(seeds, shape, *, dtype=torch.float32, device=None):
    """Standard normal noise with one seed per image, so image i depends only on ``seeds[i]``.

    Every method (and any batch size or device) sees bit-identical noise for the same seeds:
    the noise is drawn on the CPU with one ``torch.Generator`` per seed, then moved.

    Parameters
    ----------
    seeds : sequence of int, length N
    shape : tuple (C, H, W)

    Returns
    -------
    Tensor of shape (N, C, H, W).
    """
    noise = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s)),
                         dtype=dtype) for s in seeds]
    return torch.stack(noise).to(device)
