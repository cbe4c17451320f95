"""Scale schedules: a patch size or threshold as a function of the noise level sigma.

The locality and patch denoisers take a scale hyper-parameter (``PCALocalityDenoiser(threshold=)``,
``LocalScoreDenoiser(patch_size=)``, ``PatchCompositeDenoiser(patch_size=)``) that is a number or
a *schedule*: any callable ``schedule(sigma) -> number``. This package owns

* :func:`value_at` (from :mod:`analytic_denoisers.core.validation`), the one way to read a scale
  at a noise level;
* :mod:`.table` (a leaf module): :class:`Table`, values on a grid of noise levels looked up in log-sigma, saved with the
  estimator that holds it (:meth:`Table.from_steps` pairs a published per-step list with the
  step sigmas);
* :mod:`.rules`: schedules derived from data alone, :func:`wiener_extent_schedule` (the spatial
  extent of the thresholded Wiener filter, as in Lukoianov et al., arXiv 2509.09672) and
  :func:`snr_resolution_schedule` (the signal-to-noise / resolution rule after Hwang et al.,
  arXiv 2401.10247);
* :mod:`.calibration`: :func:`calibrate`, the candidate value whose outputs best match a target
  denoiser's at each sigma (Kamb & Ganguli, arXiv 2412.20292, calibrate their patch sizes so
  against a UNet).

A fixed scale is just a number.
"""

from .calibration import Calibration, calibrate
from .rules import (chebyshev_distances, max_patch_size, radial_power_spectrum, snr_resolution_schedule,
                    wavelength_patch_size, wiener_extent_schedule, wiener_radii)
from ..core.validation import value_at
from .table import INTERPOLATIONS, Table, json_object_hook

__all__ = ["INTERPOLATIONS", "Calibration", "Table", "calibrate", "chebyshev_distances", "json_object_hook",
           "max_patch_size", "radial_power_spectrum", "snr_resolution_schedule", "value_at",
           "wavelength_patch_size", "wiener_extent_schedule", "wiener_radii"]
