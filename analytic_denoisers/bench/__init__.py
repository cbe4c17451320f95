"""The benchmark protocol of DESIGN.md: every method against one reference network.

:func:`run` fits each chosen method on the training images that the reference (normally the
trained UNet) was trained on, and measures:

* **denoiser agreement**: held-out test images ``x0`` and ``x = x0 + sigma * eps`` on a sigma
  grid. Image i uses seed ``seed + i`` for its ``eps``, the same at every sigma and for every
  method. ``D_method(x, sigma)`` is compared with ``D_ref(x, sigma)``, and with ``x0`` (the
  method's own denoising MSE);
* **sampler agreement**: one seeded initial noise per sample, and the same sampler and grid for
  every method (a Karras schedule, a list of sigmas, or a VP schedule's timesteps with diffusers'
  DDIM stepping and clipping). The final samples and the x̂0 of every step are compared with the
  reference's (and, for the "single" variant, with the reference's x̂0 at the method's states);
* **the quality gate**: the reference's own denoising MSE on held-out images must be below the
  Gaussian denoiser's at every gate sigma; otherwise it is under-trained and agreement with it
  means little.

Metrics are those of :mod:`analytic_denoisers.metrics`, with time per call and peak memory.
:func:`write` saves ``results.json``, ``denoising.csv``, ``sampling.csv``, ``results.md``,
``samples.png`` and ``metrics.png`` in one folder.

Shipped protocols (``make_protocol(path=NAME)``, ``bench --protocol NAME``): the papers' setups,
each stating its source (:func:`shipped_protocols`). Modules: :mod:`.protocol` (defaults, files, checks), :mod:`.measure` (time, memory,
environment), :mod:`.run` (the protocol itself), :mod:`.report` (the files).
"""

from .measure import PeakMemory, environment
from .protocol import DEFAULT_PROTOCOL, make_protocol, reference_path, sampling_grid, shipped_protocols
from .report import markdown, plot_metrics, write
from .run import gate_text, run

__all__ = ["DEFAULT_PROTOCOL", "PeakMemory", "environment", "gate_text", "make_protocol", "markdown",
           "plot_metrics", "reference_path", "run", "sampling_grid", "shipped_protocols", "write"]
