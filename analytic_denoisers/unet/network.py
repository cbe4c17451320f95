"""The DDPM-style UNet ``F(x, c_noise)`` (Ho et al., arXiv 2006.11239), any image size."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.contract import append_dims


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
