"""Theory analyses built on the denoisers, samplers and the reference network.

So far: :mod:`~analytic_denoisers.analysis.teleport` (analytical teleportation).
"""

from .teleport import teleport_sample, teleportation

__all__ = ["teleport_sample", "teleportation"]
