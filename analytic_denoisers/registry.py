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


# hyper-parameters that the papers' configurations set per dataset: (method, dataset) -> params
DATASET_DEFAULTS = {
    # Lukoianov et al. (arXiv 2509.09672) configs: 0.005 for MNIST / Fashion-MNIST, 0.05 for CIFAR-10
    ("pca-locality", "cifar10"): {"threshold": 0.05},
}


def make(name, dataset=None, **params):
    """A new, unfitted estimator of the method called ``name`` with hyper-parameters ``params``.

    ``dataset`` (a name of :mod:`analytic_denoisers.datasets`), if given, fills in the
    per-dataset defaults of ``DATASET_DEFAULTS``; explicit ``params`` win.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](**{**DATASET_DEFAULTS.get((name, dataset), {}), **params})
