"""Name -> estimator class for every denoiser of the package, and :func:`load`, which finds the
class of a saved file here (never by importing the package root)."""

import inspect

import torch

from .core.artifact import FileFormatError, read, read_class
from .core.distributed import SHARDABLE, collectives_after
from .core.fingerprint import data_fingerprint
from .denoisers.anchored import AnchoredCompositeDenoiser
from .denoisers.empirical import EmpiricalOptimalDenoiser, NearestNeighbourDenoiser, SmoothedClosedFormDenoiser
from .denoisers.flex import PatchFlexDenoiser
from .denoisers.gaussian import GaussianDenoiser
from .denoisers.knn import KNNScoreDenoiser
from .denoisers.locality import GoldDiffDenoiser, PCALocalityDenoiser
from .denoisers.mixture import GaussianMixtureDenoiser
from .denoisers.network import NetworkDenoiser
from .denoisers.patches import LocalScoreDenoiser, PatchCompositeDenoiser
from .scales.table import json_object_hook
from .unet.estimator import UNetDenoiser

# the analytical methods, which the CLI and the benchmark fit by name
METHODS = {
    "gaussian": GaussianDenoiser,
    "empirical": EmpiricalOptimalDenoiser,
    "pca-locality": PCALocalityDenoiser,
    "local-score": LocalScoreDenoiser,
    "patch-composite": PatchCompositeDenoiser,
    "nearest": NearestNeighbourDenoiser,
    "sigma-cfdm": SmoothedClosedFormDenoiser,
    "gaussian-mixture": GaussianMixtureDenoiser,
    "golddiff": GoldDiffDenoiser,
    "knn": KNNScoreDenoiser,
    "patch-flex": PatchFlexDenoiser,
    "anchored-composite": AnchoredCompositeDenoiser,
}

# named configurations of a method, accepted wherever a method name is: name -> (method, params);
# the default benchmark leaves them out (exact ELS costs O(N (HW)^2 P^2) per image and call)
VARIANTS = {
    "els": ("local-score", {"equivariant": True, "padding": "circular"}),  # Kamb & Ganguli's ELS machine
    "bbels": ("local-score", {"equivariant": True, "padding": "zeros"}),   # their boundary-broken ELS
}
NAMES = [*METHODS, *VARIANTS]

# every class a saved file may hold, by class name
CLASSES = {cls.__name__: cls for cls in [*METHODS.values(), UNetDenoiser, NetworkDenoiser]}

# hyper-parameters that the papers' configurations set per dataset: (method, dataset) -> params
DATASET_DEFAULTS = {
    # Lukoianov et al. (arXiv 2509.09672) configs: 0.005 for MNIST / Fashion-MNIST, 0.05 for CIFAR-10
    ("pca-locality", "cifar10"): {"threshold": 0.05},
    # GoldDiff (arXiv 2602.16498) configs: 0.02 for MNIST / Fashion-MNIST (the default), 0.03 for CIFAR-10
    ("golddiff", "cifar10"): {"threshold": 0.03},
}


def method_of(name):
    """``(method, preset params)`` of a name of :data:`METHODS` or :data:`VARIANTS`."""
    if name in VARIANTS:
        method, preset = VARIANTS[name]
        return method, dict(preset)
    if name in METHODS:
        return name, {}
    raise ValueError(f"unknown method {name!r}; choose one of {sorted(NAMES)}")


def make(name, dataset=None, **params):
    """A new, unfitted estimator of the method (or variant) called ``name`` with ``params``.

    A variant (:data:`VARIANTS`, e.g. ``"els"``) is its method with the variant's preset
    hyper-parameters. ``dataset`` (a name of :mod:`analytic_denoisers.datasets`), if given, fills
    in the per-dataset defaults of ``DATASET_DEFAULTS``; explicit ``params`` win over both.
    """
    method, preset = method_of(name)
    check_param_names(METHODS[method], params, name)
    return METHODS[method](**{**DATASET_DEFAULTS.get((method, dataset), {}), **preset, **params})


def check_param_names(cls, names, what=None):
    """ValueError naming the hyper-parameters in ``names`` that ``cls`` does not have."""
    known = inspect.signature(cls).parameters
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown hyper-parameters {unknown} of {what or cls.__name__}; known: {sorted(known)}")


def _restore_tuples(cls, params):
    """JSON turns tuples into lists: give back tuples where the constructor's default is one."""
    defaults = inspect.signature(cls).parameters
    return {k: tuple(v) if isinstance(v, list) and k in defaults and isinstance(defaults[k].default, tuple)
            else v for k, v in params.items()}


def load(path, *, classes=(), verify=True, shard=None, group=None, **params):
    """Load a denoiser saved with ``est.save(path)``, checking that the file is what it says.

    Parameters
    ----------
    path : str or Path
    classes : sequence of estimator classes to look in besides :data:`CLASSES` (for your own
        denoisers, which the registry does not know)
    verify : bool
        Recompute the fingerprint of stored training images (``data_``) and compare it with the
        file's (a flipped bit is found; measured for 60,000 28 x 28 images: 0.3 s on top of a
        1.2-1.7 s load), and
        denoise one image as a check that the stored state fits together (a UNet whose weights
        do not match its parameters, eigenvectors of the wrong shape). ``False`` skips both.
    shard : ``(rank, world)`` or ``slice(start, stop)``, optional
        Read only this rank's rows of the training images and return a sharded denoiser (see
        :meth:`~analytic_denoisers.core.contract.TrainingSetMixin.shard`): no rank ever holds
        the whole set. Collective: every rank of ``group`` loads its shard of the same file
        (torch.distributed initialised first). With ``verify``, the fingerprint (of the whole
        set) is not recomputed; the denoise check runs across the ranks.
    group : torch.distributed process group of a sharded load (default: the default group)
    **params : hyper-parameters a file does not hold (the class's ``_not_saved``, e.g.
        ``network=`` for a :class:`~analytic_denoisers.denoisers.network.NetworkDenoiser`)

    Raises
    ------
    FileNotFoundError if the file does not exist; FileFormatError (a ValueError) if it is not a
    complete analytic_denoisers file, holds an unknown class, was written by a newer schema, or
    contradicts itself (see :func:`~analytic_denoisers.core.artifact.read`).
    """
    if shard is None:
        return _load(path, classes, verify, None, params)
    estimator = error = None
    try:  # a rank whose file or shard is unusable must not leave the others waiting in a collective
        estimator = _load(path, classes, False, shard, params)
    except Exception as err:  # noqa: BLE001: every failure is raised again, on every rank
        error = err
    collectives_after(error, group)
    estimator._become_shard(shard, group, whole=False)
    if verify:
        _verify(path, estimator)
    return estimator


def _load(path, classes, verify, shard, params):
    """:func:`load` in one process (of a shard's rows only, with ``shard``)."""
    name = read_class(path)
    known = {**CLASSES, **{c.__name__: c for c in classes}}
    cls = known.get(name)
    if cls is None:
        raise FileFormatError(f"{path}: unknown denoiser class {name!r}; known: {sorted(known)}")
    if shard is not None and not getattr(cls, "_shardable", False):
        raise ValueError(f"{path} holds a {name}, which cannot be sharded: {SHARDABLE}")
    # the package's classes declare their whole fitted state; a user's class may save more
    _, saved, state = read(path, object_hook=json_object_hook,
                           fitted_state=cls._fitted_state if CLASSES.get(name) is cls else None, shard=shard)
    if hasattr(cls, "_upgrade_saved"):  # a file written before the class gained state or parameters
        saved, state = cls._upgrade_saved(saved, state)
    missing = sorted(set(cls._fitted_state) - set(state))
    if missing:
        raise FileFormatError(f"{path}: truncated or corrupt contents (missing fitted state {missing}); "
                              "re-create it with est.save or `analytic-denoisers fit`")
    missing = sorted(set(getattr(cls, "_not_saved", ())) - set(params))
    if missing:
        raise ValueError(f"{path} holds a {name} without its {', '.join(missing)} (never saved): pass "
                         + ", ".join(f"{m}=..." for m in missing) + " to load")
    try:
        estimator = cls(**{**_restore_tuples(cls, saved), **params})
        estimator._check_params()
    except (TypeError, ValueError) as err:
        raise FileFormatError(f"{path}: unusable parameters for {name} ({err})") from None
    vars(estimator).update(state)
    estimator._cache = {}
    if verify:
        _verify(path, estimator)
    return estimator


def _verify(path, estimator):
    """The fingerprint of stored training images, and one denoised image, as ``load`` checks them."""
    data = getattr(estimator, "data_", None)
    whole = getattr(estimator, "shard_", None) is None  # a shard's rows are not the fingerprinted set
    if whole and isinstance(data, torch.Tensor) and data_fingerprint(data) != estimator.fingerprint_:
        raise FileFormatError(f"{path}: the stored training images do not match the file's fingerprint (a "
                              "corrupted file); re-create it with est.save or `analytic-denoisers fit`")
    if getattr(estimator, "_not_saved", ()):  # its network is the caller's, not the file's
        return
    classes = getattr(estimator, "classes_", None)
    y = None if classes is None else torch.as_tensor(classes[:1])
    try:
        out = estimator.denoise(torch.zeros((1, *estimator.image_shape_)), 1.0, y)
    except Exception as err:  # any failure here means the stored state does not fit together
        raise FileFormatError(f"{path}: the stored {type(estimator).__name__} cannot denoise "
                              f"({type(err).__name__}: {err}); re-create it with est.save") from None
    if not bool(torch.isfinite(out).all()):
        raise FileFormatError(f"{path}: the stored {type(estimator).__name__} denoises to NaN or Inf")
