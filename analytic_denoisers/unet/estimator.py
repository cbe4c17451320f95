"""The reference network as an estimator: ``fit`` trains it, ``denoise`` meets the contract."""

from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..core.batching import in_batches
from ..core.contract import DenoiserMixin
from ..core.fingerprint import data_summary
from ..core.validation import BOOLEAN, Interval, Sequence, as_training_images, check_scalar
from .network import UNet
from .precond import EDMPrecond
from .training import LOG_COLUMNS, Training

POSITIVE_INT, POSITIVE = Interval(int, 1), Interval(float, 0, closed="neither")


class UNetDenoiser(DenoiserMixin, BaseEstimator):
    """A trained UNet with EDM preconditioning, behind the package's denoiser contract.

    ``fit(X)`` trains it from scratch (or resumes from ``checkpoint``) with the EDM loss
    ``E ||D(x0 + sigma eps, sigma) - x0||^2 / c_out(sigma)^2`` and ``log sigma ~ N(p_mean, p_std^2)``
    (Karras et al., arXiv 2206.00364); ``denoise`` uses the EMA of the weights.

    Parameters
    ----------
    base_channels, channel_mult, num_res_blocks, attention : network shape, see :class:`UNet`
    sigma_data : float, the data scale of the preconditioning
    p_mean, p_std : float
        The log-normal training distribution of sigma. Wider than EDM's (-1.2, 1.2), so that
        the benchmark's whole range 0.002 ... 80 is trained: 3 standard deviations span
        0.004 ... 54.
    steps : int, optimiser steps in total
    batch_size : int, training batch size
    lr : float, Adam learning rate after a linear warm-up of ``warmup`` steps
    warmup : int
    ema_decay : float, per-step decay of the weight average used for denoising
    bf16 : bool, bfloat16 autocast during training (about 2x faster on recent CPUs; weights,
        optimiser and inference stay in float32)
    random_state : int, seeds the batches, noise levels and noise of training (and the
        initial weights)
    chunk_size : int, images per network call when denoising

    Attributes
    ----------
    weights_ : Tensor of shape (n_parameters,), float32, the EMA weights
    n_steps_ : int, optimiser steps taken
    loss_log_ : ndarray of shape (K, 4), rows (step, mean loss since the previous row, lr, seconds)
    """

    _fitted_state = DenoiserMixin._fitted_state + ("weights_", "n_steps_", "loss_log_", "classes_")
    _parameter_constraints = {
        "base_channels": [Interval(int, 1, multiple_of=8)], "channel_mult": [Sequence(POSITIVE_INT)],
        "num_res_blocks": [POSITIVE_INT], "attention": [BOOLEAN], "sigma_data": [POSITIVE],
        "p_mean": [Interval(float)], "p_std": [POSITIVE], "steps": [POSITIVE_INT],
        "batch_size": [POSITIVE_INT], "lr": [POSITIVE], "warmup": [Interval(int, 0)],
        "ema_decay": [Interval(float, 0, 1, closed="left")], "bf16": [BOOLEAN],
        "random_state": [Interval(int, 0)], "chunk_size": [POSITIVE_INT],
    }

    def __init__(self, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention=True,
                 sigma_data=0.5, p_mean=-0.8, p_std=1.6, steps=4000, batch_size=128, lr=1e-3,
                 warmup=200, ema_decay=0.999, bf16=False, random_state=0, chunk_size=256):
        self.base_channels = base_channels
        self.channel_mult = channel_mult
        self.num_res_blocks = num_res_blocks
        self.attention = attention
        self.sigma_data = sigma_data
        self.p_mean = p_mean
        self.p_std = p_std
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.warmup = warmup
        self.ema_decay = ema_decay
        self.bf16 = bf16
        self.random_state = random_state
        self.chunk_size = chunk_size

    def build(self, in_channels):
        """A new preconditioned network ``EDMPrecond(UNet(...))`` with this estimator's shape."""
        net = UNet(in_channels, self.base_channels, tuple(self.channel_mult), self.num_res_blocks,
                   self.attention)
        return EDMPrecond(net, self.sigma_data)

    def network(self, like=None):
        """The fitted network, with its EMA weights, in the dtype and on the device of ``like``."""
        self._check_fitted()
        like = self.weights_ if like is None else like

        def make():
            model = self.build(self.image_shape_[0]).to(device=like.device, dtype=like.dtype)
            vector_to_parameters(self.weights_.to(device=like.device, dtype=like.dtype), model.parameters())
            return model.eval().requires_grad_(False)

        return self._derived("network", like, make)

    def _denoise(self, x, sigma, y):
        model = self.network(x)
        # autograd flows to x when asked (Jacobians of D), never into the weights
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            return in_batches(model, x, sigma, self.chunk_size)

    # -- training ---------------------------------------------------------------------------

    def fit(self, X, y=None, *, checkpoint=None, checkpoint_every=500, log_every=50, progress=False):
        """Train the network on images ``X`` (N, C, H, W) in [-1, 1]. Returns self.

        Parameters
        ----------
        X : Tensor of shape (N, C, H, W); training runs on its device, in float32
        y : must be None (the reference network is unconditional)
        checkpoint : str or Path, optional
            Training checkpoint, written every ``checkpoint_every`` steps, on interruption
            (Ctrl-C) and at the end; if it exists, training resumes from it (it must have been
            made with the same hyper-parameters and data). The loss log is written beside it
            (:func:`~.training.log_path`).
        log_every : int, steps per loss-log row
        progress : bool, show a progress bar
        """
        if y is not None:
            raise ValueError("UNetDenoiser is unconditional: call fit(X) without labels")
        self._check_params()
        check_scalar(checkpoint_every, "checkpoint_every", POSITIVE_INT)
        check_scalar(log_every, "log_every", POSITIVE_INT)
        X = as_training_images(X).float()
        summary = data_summary(X)
        run = Training(self, X.shape[1], X.device, summary["fingerprint_"])
        if checkpoint is not None and Path(checkpoint).exists():
            run.resume(checkpoint)
        try:
            run.train(X, progress=progress, log_every=log_every, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every)
        except KeyboardInterrupt:
            if checkpoint is not None and run.consistent:  # else the last periodic one stands
                run.save(checkpoint)
            raise
        if checkpoint is not None:
            run.save(checkpoint)
        self._reset_data_summary()
        self._update_data_summary(summary)
        self.classes_ = None  # unconditional
        self.weights_ = parameters_to_vector(run.ema.parameters()).detach().float().cpu()
        self.n_steps_ = run.step
        self.loss_log_ = np.asarray(run.log, dtype=np.float64).reshape(-1, len(LOG_COLUMNS))
        return self
