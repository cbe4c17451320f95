"""Theory analyses built on the denoisers, samplers and the reference network.

Each takes any denoiser (normally the reference UNet) and a fitted
:class:`~analytic_denoisers.GaussianDenoiser` of its training data, and returns JSON-ready numbers
beside the Gaussian model's closed-form prediction; ``analytic-denoisers analyze <name>`` runs it
and writes the JSON and figures.

* :mod:`~.trajectory`: trajectory geometry, "diffusion as painting" (Wang & Vastola, arXiv 2303.02490)
* :mod:`~.teleport`: analytical teleportation (arXiv 2311.10892 / 2412.09726)
* :mod:`~.chromatography`: resolution chromatography (Hwang, Park & Jo, arXiv 2401.10247)
* :mod:`~.locality_maps`: Jacobian rows against the Wiener filter (Lukoianov et al., arXiv 2509.09672)
"""

from . import chromatography, locality_maps, teleport, trajectory
from .chromatography import analytic_chromatogram, measured_chromatogram, resolution_bands
from .locality_maps import jacobian_rows
from .teleport import teleport_sample, teleportation
from .trajectory import trajectory_geometry

__all__ = ["analytic_chromatogram", "chromatography", "jacobian_rows", "locality_maps",
           "measured_chromatogram", "resolution_bands", "teleport", "teleport_sample", "teleportation",
           "trajectory", "trajectory_geometry"]
