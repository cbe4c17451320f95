"""EDM preconditioning (Karras et al., arXiv 2206.00364, Table 1): a network ``F`` made sigma-native."""

from torch import nn

from ..core.contract import append_dims


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
