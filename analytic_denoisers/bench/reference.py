"""The reference that the benchmark and the analyses compare with: any denoiser, or where to find one."""

import importlib
from pathlib import Path

from .. import registry
from ..core.files import shown_path
from ..denoisers.network import NetworkDenoiser

ACCEPTED = ("a denoiser saved by this package (.h5)", "a diffusers pipeline or UNet folder",
            "MODULE:FACTORY, a Python callable that returns a denoiser or (network, adapter parameters)",
            "in Python, any denoiser object or callable f(x, sigma)")


def _accepted():
    return "accepted references: " + "; ".join(ACCEPTED)


def open_reference(reference, params=None):
    """The reference denoiser and the name reports give it.

    Parameters
    ----------
    reference : str, Path or object
        A saved ``.h5`` of this package (:func:`analytic_denoisers.registry.load`); a diffusers
        folder (:meth:`NetworkDenoiser.from_diffusers`); ``"MODULE:FACTORY"``, a callable
        imported from MODULE and called without arguments, that returns a denoiser, or
        ``(network, dict of NetworkDenoiser parameters)`` (wrapped in a :class:`NetworkDenoiser`);
        or, in Python, a denoiser object. A bare callable (from a factory or given directly) is
        taken as ``f(x, sigma)``, the posterior mean itself, unless ``params`` say otherwise.
    params : dict, optional
        :class:`NetworkDenoiser` parameters for a network (they override the factory's), or the
        parameters a ``.h5`` file does not hold (e.g. ``network``).

    Returns
    -------
    (denoiser, str). A network's adapter comes unfitted: fit it on the images it was trained on.
    """
    params = dict(params or {})
    if not isinstance(reference, (str, Path)):
        if hasattr(reference, "denoise"):
            return _with_params(reference, params, type(reference).__name__), type(reference).__name__
        return _adapter(reference, params, "callable"), type(reference).__name__
    path = Path(reference)
    if path.is_dir():
        return NetworkDenoiser.from_diffusers(path, **params), shown_path(path)
    if path.is_file():
        if path.suffix != ".h5":
            raise ValueError(f"{path}: not a file this package reads as a reference; {_accepted()}")
        return registry.load(path, **params), shown_path(path)
    module, sep, name = str(reference).partition(":")
    if not (sep and module and name.isidentifier()):
        raise FileNotFoundError(f"{reference}: no such file or folder; {_accepted()}")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{reference}: cannot import {name} from {module} ({err}); {_accepted()}") from None
    made = factory()
    if hasattr(made, "denoise"):
        return _with_params(made, params, reference), str(reference)
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], dict):
        network, settings = made
        return _adapter(network, {**settings, **params}, reference), str(reference)
    return _adapter(made, params, reference), str(reference)


def _adapter(network, params, what):
    if not callable(network):
        raise ValueError(f"{what} gave {type(network).__name__}, not a network; {_accepted()}")
    if "parameterization" not in params:  # a bare callable f(x, sigma) is already the posterior mean
        params = {"parameterization": "denoised", "time_input": "sigma", **params}
    return NetworkDenoiser(network, **params)


def _with_params(denoiser, params, what):
    if params:
        if not hasattr(denoiser, "set_params"):
            raise ValueError(f"{what} takes no reference parameters, got {sorted(params)}")
        denoiser.set_params(**params)
    return denoiser
