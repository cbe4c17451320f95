"""Name -> estimator class for every denoiser the CLI and the benchmark can fit."""

from .empirical import EmpiricalOptimalDenoiser
from .gaussian import GaussianDenoiser
from .locality import PCALocalityDenoiser
from .patches import LocalScoreDenoiser, PatchCompositeDenoiser

METHODS = {
    "gaussian": GaussianDenoiser,
    "empirical": EmpiricalOptimalDenoiser,
    "pca-locality": PCALocalityDenoiser,
    "local-score": LocalScoreDenoiser,
    "patch-composite": PatchCompositeDenoiser,
}


def make(name, **params):
    """A new, unfitted estimator of the method called ``name`` with hyper-parameters ``params``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](**params)
