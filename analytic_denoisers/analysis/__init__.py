"""Theory analyses built on the denoisers, samplers and the reference network.

Each analysis is a function of any denoiser (an estimator of this package, a
:class:`~analytic_denoisers.NetworkDenoiser`, or a plain callable ``f(x, sigma)``; normally the
reference network) and a fitted :class:`~analytic_denoisers.GaussianDenoiser` of its training
data, and returns JSON-ready numbers beside the Gaussian model's closed-form prediction;
``analytic-denoisers analyze <name>`` runs it and writes the JSON and figures.

* :func:`trajectory_geometry` (:mod:`~.trajectory`): "diffusion as painting" (Wang & Vastola, arXiv 2303.02490)
* :func:`teleportation` (:mod:`~.teleport`): analytical teleportation (arXiv 2311.10892 / 2412.09726)
* :func:`chromatography` (:mod:`~.resolution`): resolution chromatography (Hwang, Park & Jo, arXiv 2401.10247)
* :func:`locality_maps` (:mod:`~.locality`): Jacobian rows against the Wiener filter (Lukoianov et al., arXiv 2509.09672)
"""

from . import locality, resolution, teleport, trajectory
from .locality import jacobian_rows, locality_maps
from .resolution import analytic_chromatogram, chromatography, measured_chromatogram, resolution_bands
from .teleport import teleport_sample, teleportation
from .trajectory import trajectory_geometry

__all__ = ["analytic_chromatogram", "chromatography", "jacobian_rows", "locality", "locality_maps",
           "measured_chromatogram", "resolution", "resolution_bands", "teleport", "teleport_sample",
           "teleportation", "trajectory", "trajectory_geometry"]
