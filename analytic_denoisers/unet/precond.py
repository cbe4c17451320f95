"""EDM preconditioning (Karras et al., arXiv 2206.00364, Table 1): a network ``F`` made sigma-native."""

from torch import nn

from ..sampling.parameterizations import denoised_from, edm_coefficients, network_input


class EDMPrecond(nn.Module):
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``: x (N, C, H, W), sigma (N,)."""

    def __init__(self, net, sigma_data=0.5):
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    def forward(self, x, sigma):
        c_noise = edm_coefficients(sigma, self.sigma_data)[3]
        out = self.net(network_input(x, sigma, "edm", self.sigma_data), c_noise)
        return denoised_from(out.to(x.dtype), x, sigma, "edm", self.sigma_data)
