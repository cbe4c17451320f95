"""Any trained diffusion network as a sigma-native denoiser: the adapter of DESIGN.md.

The network's prediction (eps, x0, v, EDM's raw ``F``, or already ``D``) and its time input
(timesteps of an ``alpha_bar`` table, sigma, EDM's ``c_noise``, or any function of sigma) are
converted exactly to ``D(x, sigma)``; the formulas are in
:mod:`analytic_denoisers.sampling.parameterizations`.
"""

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from ..core.batching import in_batches
from ..core.compat import import_diffusers
from ..core.contract import DenoiserMixin
from ..core.validation import Callable, Interval, Options, Sequence, as_training_images
from ..sampling.parameterizations import (PARAMETERIZATIONS, denoised_from, edm_coefficients, network_input,
                                          timestep_from_sigma)
from ..sampling.schedules import sigma_from_alpha_bar

TIME_INPUTS = ("timestep", "sigma", "c_noise")
DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}  # diffusers' prediction_type


class NetworkDenoiser(DenoiserMixin, BaseEstimator):
    """A trained network ``network(x_in, time[, y])`` behind the sigma-native contract.

    Parameters
    ----------
    network : torch.nn.Module or callable
        Called as ``network(x_in, time)``, or ``network(x_in, time, y)`` when fitted with labels,
        with ``x_in`` of shape (B, C, H, W) and ``time`` of shape (B,). Its output may be a
        tensor, a tuple whose first item is it, or an object with ``.sample`` (diffusers).
        Inputs are cast to the dtype of the module's parameters, the output back to the dtype
        of ``x``; the module must be on the device of ``x``.
    parameterization : {"eps", "x0", "v", "edm", "denoised"}, default "eps"
        What the network predicts. "eps", "x0" and "v" networks were trained on a variance-
        preserving process and are fed ``x_t = sqrt(alpha_bar) x``; "edm" is EDM's raw ``F``,
        fed ``c_in x``; "denoised" is already ``D(x, sigma)``, fed ``x``.
    time_input : {"timestep", "sigma", "c_noise"} or callable, default "timestep"
        The network's time input: the timestep on ``alpha_bars`` (fractional between grid
        points, interpolated in log-sigma as k-diffusion's ``DiscreteSchedule`` does; exact on
        them), sigma itself, EDM's ``c_noise = log(sigma) / 4``, or a function of the sigma
        tensor (B,) giving it (e.g. a continuous ``t``).
    alpha_bars : sequence or 1-D tensor of shape (T,), optional
        The cumulative signal fractions of the network's discrete schedule, strictly decreasing
        in (0, 1) (e.g. ``ad.schedules.ddpm_linear_alpha_bars()``); needed for "timestep".
    sigma_data : float, default 0.5, the data scale of the "edm" preconditioning
    batch_size : int, default 256, images per network call

    Attributes
    ----------
    classes_ : ndarray or None, the labels the network is conditioned on (from ``fit(X, y)``)
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin; they describe
        the images ``fit`` was given (normally the network's training images), so that the
        benchmark can say whether the analytical denoisers are fitted on the same data.

    Notes
    -----
    ``fit`` trains nothing. ``save`` writes the adapter's configuration and data summary, not
    the network: ``ad.load(path, network=net)`` gives it back with the network you pass.
    Autograd reaches ``x`` when it requires grad (for Jacobians); otherwise the network runs
    without building a graph.
    """

    classes_ = None
    _not_saved = ("network",)  # constructor arguments a saved file does not hold: pass them to ad.load
    _fitted_state = DenoiserMixin._fitted_state + ("classes_",)
    _parameter_constraints = {
        "network": [Callable("a torch.nn.Module or a callable network(x_in, time)")],
        "parameterization": [Options(*PARAMETERIZATIONS)],
        "time_input": [Options(*TIME_INPUTS), Callable("a function of sigma giving the network's time input")],
        "alpha_bars": [Sequence(Interval(float, 0, 1, closed="neither")), None],
        "sigma_data": [Interval(float, 0, closed="neither")],
        "batch_size": [Interval(int, 1)],
    }

    def __init__(self, network=None, parameterization="eps", time_input="timestep", alpha_bars=None,
                 sigma_data=0.5, batch_size=256):
        self.network = network
        self.parameterization = parameterization
        self.time_input = time_input
        self.alpha_bars = alpha_bars
        self.sigma_data = sigma_data
        self.batch_size = batch_size

    @classmethod
    def from_diffusers(cls, path, scheduler=None, **params):
        """The adapter around a diffusers UNet saved on disk (nothing is downloaded).

        Parameters
        ----------
        path : str or Path
            A pipeline folder as ``DDPMPipeline.save_pretrained`` writes it (``model_index.json``,
            ``unet/``, ``scheduler/``), or a bare UNet folder (``config.json`` and its weights,
            e.g. ``UNet2DModel.save_pretrained``).
        scheduler : str or Path, optional
            The scheduler folder (``scheduler_config.json``); default ``path/scheduler``, needed
            with a bare UNet folder.
        **params : more hyper-parameters, e.g. ``batch_size``

        Returns
        -------
        An unfitted NetworkDenoiser: ``parameterization`` from the scheduler's ``prediction_type``
        (epsilon, sample, v_prediction), ``time_input="timestep"`` and ``alpha_bars`` the
        scheduler's own ``alphas_cumprod`` (its betas and number of timesteps). The UNet is put in
        eval mode without gradients for its weights. Needs ``pip install
        "analytic-denoisers[diffusers]"``.
        """
        diffusers = import_diffusers()
        path = Path(path)
        unet_dir = path / "unet" if (path / "model_index.json").is_file() else path
        scheduler_dir = path / "scheduler" if scheduler is None else Path(scheduler)
        kinds = []
        for folder, name in ((unet_dir, "config.json"), (scheduler_dir, "scheduler_config.json")):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: expected a diffusers pipeline folder "
                                        "(model_index.json, unet/, scheduler/), or a UNet folder with scheduler=FOLDER")
            config = json.loads((folder / name).read_text())
            kind = getattr(diffusers, str(config.get("_class_name")), None)
            if not isinstance(kind, type):
                raise ValueError(f"{folder / name}: unknown diffusers class {config.get('_class_name')!r}")
            kinds.append(kind)
        unet_kind, scheduler_kind = kinds
        network = unet_kind.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
        schedule = scheduler_kind.from_pretrained(scheduler_dir, local_files_only=True)
        prediction = schedule.config.prediction_type
        if prediction not in DIFFUSERS_PREDICTIONS:
            raise ValueError(f"{scheduler_dir}: prediction_type {prediction!r} is not one of {sorted(DIFFUSERS_PREDICTIONS)}")
        return cls(network.eval().requires_grad_(False), parameterization=DIFFUSERS_PREDICTIONS[prediction],
                   time_input="timestep", alpha_bars=schedule.alphas_cumprod.double(), **params)

    def _check_params(self, params=None):
        params = self.get_params(deep=False) if params is None else params
        super()._check_params(params)
        if params["time_input"] == "timestep":
            alpha_bars = params["alpha_bars"]
            if alpha_bars is None:
                raise ValueError("NetworkDenoiser: time_input='timestep' needs the network's alpha_bars")
            if len(alpha_bars) < 2 or not bool((torch.as_tensor(alpha_bars).diff() < 0).all()):
                raise ValueError("NetworkDenoiser: alpha_bars must be at least 2 strictly decreasing values")

    def sigma_range(self):
        """``(smallest, largest)`` sigma of the network's timestep table, or None without one: the
        noise levels it was trained on (outside, the adapter uses the nearest end timestep)."""
        if self.time_input != "timestep" or self.alpha_bars is None:
            return None
        table = sigma_from_alpha_bar(torch.as_tensor(self.alpha_bars, dtype=torch.float64))
        return float(table.min()), float(table.max())

    def fit(self, X, y=None):
        """Record the image shape and summary of ``X`` (N, C, H, W), normally the network's
        training images, and with labels ``y`` (N,) make the network class-conditional. Trains
        nothing; returns self."""
        self._check_params()
        X = as_training_images(X)
        classes = None if y is None else np.unique(torch.as_tensor(y).cpu().numpy())
        self._set_data_summary(X)
        self.classes_ = classes
        return self

    def _time(self, sigma):
        if callable(self.time_input):
            return self.time_input(sigma)
        if self.time_input == "timestep":
            return timestep_from_sigma(sigma, self.alpha_bars).to(sigma)
        return sigma if self.time_input == "sigma" else edm_coefficients(sigma, self.sigma_data)[3]

    def _call(self, x, sigma, y=None):
        net = self.network
        weight = next(net.parameters(), None) if isinstance(net, nn.Module) else None
        if weight is not None and weight.device != x.device:
            raise ValueError(f"the network is on {weight.device} and x on {x.device}: move one of them "
                             "(the adapter never moves your network)")
        dtype = x.dtype if weight is None else weight.dtype
        inputs = (network_input(x, sigma, self.parameterization, self.sigma_data).to(dtype),
                  self._time(sigma).to(dtype))
        out = net(*inputs) if y is None else net(*inputs, y)
        out = out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the network returned {got} for input of shape {tuple(x.shape)}")
        return denoised_from(out.to(x.dtype), x, sigma, self.parameterization, self.sigma_data)

    def _denoise(self, x, sigma, y):
        # autograd flows to x when asked (Jacobians of D); otherwise no graph is built
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            return in_batches(self._call, x, sigma, self.batch_size, y)
