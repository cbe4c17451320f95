"""The reference network: a small DDPM-style UNet behind EDM preconditioning, and its training.

* :class:`UNet` is the noise-conditional network ``F(x, c_noise)`` of Ho et al. (arXiv 2006.11239):
  residual blocks with GroupNorm, a sinusoidal noise embedding, optional self-attention at the
  lowest resolution.
* :func:`edm_coefficients` and :class:`EDMPrecond` make it sigma-native (Karras et al.,
  arXiv 2206.00364, Table 1): ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``.
* :class:`UNetDenoiser` is the estimator: ``fit`` trains the network with the EDM loss, and
  ``denoise`` meets the same contract as every analytical denoiser. ``save`` writes its
  exponential-moving-average (EMA) weights to HDF5.

Training checkpoints hold the weights, the EMA, the optimiser, the random state and the loss
log. They are separate torch files, written atomically, so an interrupted ``fit`` resumes where
it stopped and, on the CPU, ends with the same weights as an uninterrupted run (some CUDA
kernels are not deterministic, so on a GPU it ends close to them).
"""

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from tqdm.auto import tqdm

from .base import DenoiserMixin, append_dims, as_training_images, data_summary
from .io import atomic_write

CHECKPOINT_FORMAT = "analytic_denoisers.unet-checkpoint"
LOG_COLUMNS = ("step", "loss", "lr", "seconds")


# ----------------------------------------------------------------------------- the network

def _norm(channels):
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _zero(module):
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` at geometric frequencies 1 ... ``max_freq``: (N,) -> (N, dim)."""

    def __init__(self, dim, max_freq=100.0):
        super().__init__()
        self.dim, self.max_freq = dim, max_freq

    def forward(self, c_noise):
        freqs = torch.exp(torch.linspace(0.0, math.log(self.max_freq), self.dim // 2,
                                         dtype=c_noise.dtype, device=c_noise.device))
        args = c_noise[:, None] * freqs  # (N, dim / 2)
        return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding as a per-channel scale and shift, and a skip."""

    def __init__(self, cin, cout, emb_dim):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = _norm(cout), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = append_dims(self.emb(emb), 4).chunk(2, dim=1)  # (N, cout, 1, 1) each
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions, with a residual connection."""

    def __init__(self, channels):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(2, 3).unbind(1)  # (N, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
        return x + self.proj(out.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Conv2d):
    def __init__(self, channels):
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """DDPM-style UNet ``F(x, c_noise)`` (Ho et al., arXiv 2006.11239), any image size.

    Parameters
    ----------
    in_channels : int
    base_channels : int, channels at full resolution (a multiple of 8)
    channel_mult : sequence of int, channel multiplier per resolution; each level after the first
        halves the resolution
    num_res_blocks : int, residual blocks per level on the way down (one more on the way up)
    attention : bool, self-attention between the two middle blocks (lowest resolution)

    Images whose height or width is not a multiple of ``2**(len(channel_mult) - 1)`` are
    zero-padded at the bottom and right, and the output is cropped back.
    """

    def __init__(self, in_channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                 attention=True):
        super().__init__()
        if base_channels < 8 or base_channels % 8:
            raise ValueError(f"base_channels must be a positive multiple of 8, got {base_channels}")
        if not channel_mult or min(channel_mult) < 1 or num_res_blocks < 1:
            raise ValueError(f"channel_mult must be positive ints and num_res_blocks >= 1, got "
                             f"{channel_mult!r} and {num_res_blocks!r}")
        emb_dim = 4 * base_channels
        self.multiple = 2 ** (len(channel_mult) - 1)
        self.embed = nn.Sequential(NoiseEmbedding(base_channels), nn.Linear(base_channels, emb_dim),
                                   nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        ch, skips = base_channels, [base_channels]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, base_channels * mult, emb_dim))
                ch = base_channels * mult
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim),
                                  SelfAttention(ch) if attention else nn.Identity(),
                                  ResBlock(ch, ch, emb_dim)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), base_channels * mult, emb_dim))
                ch = base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1)))

    @staticmethod
    def _run(block, h, emb):
        return block(h, emb) if isinstance(block, ResBlock) else block(h)

    def forward(self, x, c_noise):
        """x : (N, C, H, W), c_noise : (N,) -> (N, C, H, W)."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        x = F.pad(x, (0, pad_w, 0, pad_h))
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            skips.append(h)
        for block in self.mid:
            h = self._run(block, h, emb)
        for block in self.up:
            if isinstance(block, ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(block, h, emb)
        return self.out(h)[..., :height, :width]


def edm_coefficients(sigma, sigma_data):
    """EDM preconditioning (Karras et al., arXiv 2206.00364, Table 1) for sigma of shape (N,).

    ``c_skip = s_d^2 / (sigma^2 + s_d^2)``, ``c_out = sigma s_d / sqrt(sigma^2 + s_d^2)``,
    ``c_in = 1 / sqrt(sigma^2 + s_d^2)``, ``c_noise = log(sigma) / 4``, each of shape (N,).
    """
    total = sigma.square() + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


class EDMPrecond(nn.Module):
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``: x (N, C, H, W), sigma (N,)."""

    def __init__(self, net, sigma_data=0.5):
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    def forward(self, x, sigma):
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        out = self.net(append_dims(c_in, 4) * x, c_noise)
        return append_dims(c_skip, 4) * x + append_dims(c_out, 4) * out.to(x.dtype)


# ----------------------------------------------------------------------------- files

def log_path(checkpoint):
    """The loss log CSV written beside a training checkpoint: ``run.ckpt`` -> ``run.ckpt.log.csv``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".log.csv")


def write_log(path, rows):
    """Write loss-log rows (step, loss, lr, seconds) as CSV, atomically."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(LOG_COLUMNS)
            out.writerows([int(r[0]), f"{r[1]:.6g}", f"{r[2]:.6g}", f"{r[3]:.1f}"] for r in rows)
    return atomic_write(path, write)


# ----------------------------------------------------------------------------- the estimator

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

    _fitted_state = DenoiserMixin._fitted_state + ("weights_", "n_steps_", "loss_log_")

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
            return torch.cat([model(x[i:i + self.chunk_size], sigma[i:i + self.chunk_size])
                              for i in range(0, len(x), self.chunk_size)])

    # -- training ---------------------------------------------------------------------------

    def _check_params(self, **counts):
        counts = dict(steps=self.steps, batch_size=self.batch_size, chunk_size=self.chunk_size,
                      base_channels=self.base_channels, num_res_blocks=self.num_res_blocks, **counts)
        for name, value in dict(counts, warmup=self.warmup, random_state=self.random_state).items():
            low = 0 if name in ("warmup", "random_state") else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("lr", "sigma_data", "p_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not (isinstance(self.p_mean, (int, float)) and math.isfinite(self.p_mean)):
            raise ValueError(f"p_mean must be a finite number, got {self.p_mean!r}")

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
            (:func:`log_path`).
        log_every : int, steps per loss-log row
        progress : bool, show a progress bar
        """
        if y is not None:
            raise ValueError("UNetDenoiser is unconditional: call fit(X) without labels")
        self._check_params(checkpoint_every=checkpoint_every, log_every=log_every)
        X = as_training_images(X).float()
        summary = data_summary(X)
        run = _Training(self, X.shape[1], X.device, summary["fingerprint_"])
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


class _Training:
    """The mutable state of one training run: network, EMA, optimiser, generator, step, log."""

    def __init__(self, est, in_channels, device, fingerprint):
        self.est, self.device, self.fingerprint = est, device, fingerprint
        torch_seed = torch.Generator().manual_seed(int(est.random_state))
        # seeded initial weights (made on the CPU); torch's global CPU generator is restored
        # after, and no CUDA generator is touched
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(torch.randint(2**62, (), generator=torch_seed)))
            self.model = est.build(in_channels).to(device)
            self.ema = est.build(in_channels).to(device).requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=est.lr)
        self.generator = torch.Generator(device=device).manual_seed(int(est.random_state))
        self.step, self.log, self.seconds = 0, [], 0.0
        self.running = [0.0, 0]  # loss sum and count since the last log row
        # random state after the last completed step, and whether the state is between steps
        self.rng_state, self.consistent = self.generator.get_state(), True

    def lr_at(self, step):
        return self.est.lr * min(1.0, (step + 1) / max(self.est.warmup, 1))

    def loss(self, x0):
        """EDM loss of a batch of clean images (B, C, H, W), a scalar."""
        est, n = self.est, x0.shape[0]
        g = self.generator
        sigma = (est.p_mean + est.p_std * torch.randn(n, generator=g, device=self.device)).exp()
        noise = torch.randn(x0.shape, generator=g, device=self.device)
        weight = (sigma.square() + est.sigma_data**2) / (sigma * est.sigma_data).square()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(est.bf16)):
            denoised = self.model(x0 + append_dims(sigma, 4) * noise, sigma)
        return (append_dims(weight, 4) * (denoised.float() - x0).square()).mean()

    def train(self, X, *, progress, log_every, checkpoint, checkpoint_every):
        est = self.est
        decay_max = float(est.ema_decay)
        self.start = time.perf_counter() - self.seconds
        bar = tqdm(total=est.steps, initial=min(self.step, est.steps), disable=not progress,
                   desc="training UNet", unit="step")
        with bar:
            while self.step < est.steps:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step)
                batch = X[torch.randint(len(X), (est.batch_size,), generator=self.generator,
                                        device=self.device)]
                loss = self.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {self.step}; "
                                             "lower lr or turn off bf16")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.consistent = False  # weights, EMA, step and random state change together
                self.optimizer.step()
                self.step += 1
                decay = min(decay_max, (1 + self.step) / (10 + self.step))  # short warm-up of the EMA
                with torch.no_grad():
                    for avg, p in zip(self.ema.parameters(), self.model.parameters()):
                        avg.lerp_(p, 1 - decay)
                self.rng_state = self.generator.get_state()
                self.consistent = True
                self.running = [self.running[0] + loss.item(), self.running[1] + 1]
                bar.update()
                if self.step % log_every == 0 or self.step == est.steps:
                    mean = self.running[0] / self.running[1]
                    self.log.append([self.step, mean, self.lr_at(self.step - 1), self.elapsed()])
                    bar.set_postfix(loss=f"{mean:.4f}")
                    self.running = [0.0, 0]
                if checkpoint is not None and self.step % checkpoint_every == 0:
                    self.save(checkpoint)
        self.seconds = self.elapsed()
        del self.start

    def elapsed(self):
        """Training seconds so far, over every resumed session."""
        return time.perf_counter() - self.start if hasattr(self, "start") else self.seconds

    # -- checkpoints ------------------------------------------------------------------------

    def save(self, path):
        state = {
            "format": CHECKPOINT_FORMAT, "version": 1, "params": _plain(self.est.get_params()),
            "fingerprint": self.fingerprint, "device": self.device.type, "step": self.step,
            "seconds": self.elapsed(), "log": self.log, "running": self.running,
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.rng_state,
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        write_log(log_path(path), self.log)

    def resume(self, path):
        """Continue from the checkpoint at ``path``, which must match these params and data."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a UNet training checkpoint")
        except Exception as err:  # torch raises many types on truncated / foreign files
            raise ValueError(f"{path}: unreadable training checkpoint ({err}); delete it to "
                             "train from scratch") from None
        mine = _plain(self.est.get_params())
        ignore = {"steps", "chunk_size"}  # training may be extended; inference chunking is free
        theirs = state["params"]
        differ = [f"{k}={theirs.get(k)!r}, not {mine[k]!r}" for k in sorted(mine)
                  if k not in ignore and theirs.get(k) != mine[k]]
        if differ:
            raise ValueError(f"{path} was made with different hyper-parameters "
                             f"({'; '.join(differ)}); use the same ones, or another checkpoint path")
        if state["step"] > self.est.steps:
            raise ValueError(f"{path} has already trained {state['step']} steps, more than steps="
                             f"{self.est.steps}; ask for at least {state['step']} steps, or use another path")
        if state.get("device", "cpu") != self.device.type:
            raise ValueError(f"{path} was trained on {state.get('device', 'cpu')}, not {self.device.type}: "
                             "resume it on the same kind of device (random states differ)")
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(f"{path} was trained on different images (data fingerprint differs); "
                             "use the same data, or another checkpoint path")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng_state = state["generator"]
        self.step, self.seconds, self.log = state["step"], state["seconds"], [list(r) for r in state["log"]]
        self.running = list(state.get("running", [0.0, 0]))


def _plain(params):
    """get_params() as plain Python values (tuples as lists, numpy scalars as numbers), as they
    come back from a checkpoint or JSON."""
    return {k: list(v) if isinstance(v, tuple) else v.item() if isinstance(v, np.generic) else v
            for k, v in params.items()}
