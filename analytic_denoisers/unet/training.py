"""One training run of the reference UNet with the EDM loss: resumable, seeded, logged.

Training checkpoints hold the weights, the EMA, the optimiser, the random state and the loss
log. They are separate torch files, written atomically, so an interrupted ``fit`` resumes where
it stopped and, on the CPU, ends with the same weights as an uninterrupted run (some CUDA
kernels are not deterministic, so on a GPU it ends close to them).
"""

import csv
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.contract import append_dims
from ..core.files import atomic_write, to_jsonable

CHECKPOINT_FORMAT = "analytic_denoisers.unet-checkpoint"
LOG_COLUMNS = ("step", "loss", "lr", "seconds")


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


class Training:
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
            "format": CHECKPOINT_FORMAT, "version": 1, "params": to_jsonable(self.est.get_params()),
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
        mine = to_jsonable(self.est.get_params())
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
