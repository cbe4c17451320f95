"""Small test problems and independent float64 brute-force references."""

import math

import torch

from analytic_denoisers.testing import tiny_images  # noqa: F401  (the public suite's problems, shared)


def randn(*shape, seed=0):
    """Seeded float64 standard normal tensor (tests never use the global generator)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# noise levels of the brute-force tests: from near-memorisation to nearly the data mean
SIGMAS = [1e-2, 0.1, 1.0, 10.0, 1e2]

# a UNetDenoiser small and short enough for unit tests (seconds on a CPU)
TINY_UNET = dict(base_channels=8, channel_mult=(1, 2), steps=2, batch_size=4, warmup=1)


def near_data(data, n, sigma, seed):
    """Queries near the first n training images (so that small sigmas still mix several
    candidates), and one far from them: n + 1 queries."""
    shape = data.shape[1:]
    x = data[:n] + 0.3 * sigma * randn(n, *shape, seed=seed)
    return torch.cat([x, tiny_images(1, shape, seed=seed + 1)])


def gaussian_problem(d_shape=(1, 3, 3), n=2000, seed=0):
    """Samples of a known Gaussian: returns (X, true_mean (d,), true_cov (d, d))."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(d_shape)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    cov = A @ A.T + 0.05 * torch.eye(d, dtype=torch.float64)
    mean = 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
    X = mean + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    return X.reshape((n,) + d_shape), mean, cov


def empirical_reference(x, sigma, data):
    """Posterior mean over ``data`` with explicit loops and a float64 log-sum-exp."""
    x, data = x.double().reshape(len(x), -1), data.double().reshape(len(data), -1)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    out = torch.empty_like(x)
    for n in range(len(x)):
        logits = [-float(((x[n] - xi) ** 2).sum()) / (2 * float(sigma[n]) ** 2) for xi in data]
        top = max(logits)
        weights = [math.exp(v - top) for v in logits]
        out[n] = sum(w * xi for w, xi in zip(weights, data)) / sum(weights)
    return out


def wiener_reference(x, sigma, mean, cov):
    """``mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)`` by a linear solve (no eigenbasis)."""
    flat = x.double().reshape(len(x), -1)
    eye = torch.eye(len(mean), dtype=torch.float64)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    out = torch.stack([
        mean + cov @ torch.linalg.solve(cov + s**2 * eye, xn - mean) for xn, s in zip(flat, sigma)
    ])
    return out.reshape(x.shape)


def pca_locality_reference(x, sigma, data, threshold, rule="published", temperature=1.0):
    """Lukoianov et al.'s denoiser with explicit loops over queries, pixels and images.

    The Wiener matrix comes from a linear solve with the biased covariance (no eigenbasis). Rows
    are normalised by their diagonal, by 1 where ``|W[n, n]| < 1e-6`` (``rule="published"``) or
    zeroed where it is not positive ("positive-diagonal"); threshold 0 keeps the real weights.
    Returns the output (N, d) and the mask (d, d).
    """
    flat, xs = data.double().reshape(len(data), -1), x.double().reshape(len(x), -1)
    d = flat.shape[1]
    cov = torch.cov(flat.T, correction=0)
    W = torch.linalg.solve(cov + sigma**2 * torch.eye(d, dtype=torch.float64), cov).T  # cov (cov + s^2 I)^-1
    M = torch.zeros_like(W)
    for n in range(d):
        w = float(W[n, n])
        if rule == "published":
            M[n] = W[n] / (1.0 if abs(w) < 1e-6 else w)
        elif w > 0:
            M[n] = W[n] / w
    mask = M if threshold == 0 else M.abs() >= threshold * M.abs().max()
    weights = mask.double()
    out = torch.empty_like(xs)
    for n in range(len(xs)):
        for m in range(d):
            logits = [-float((weights[:, m] * (xs[n] - xi) ** 2).sum()) / (2 * temperature * sigma**2) for xi in flat]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            out[n, m] = sum(w * float(xi[m]) for w, xi in zip(exps, flat)) / sum(exps)
    return out, mask


def _softmax_mean(logits, values):
    """sum_k softmax(logits)_k values_k with a float64 log-sum-exp; values are tensors."""
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def _patch(img, r, c, size, circular):
    """The size x size patch of img (C, H, W) centred on (r, c), channels x rows x cols, as a list."""
    _, h, w = img.shape
    half, vals = size // 2, []
    for ch in range(img.shape[0]):
        for dr in range(-half, half + 1):
            for dc in range(-half, half + 1):
                rr, cc = r + dr, c + dc
                if circular:
                    vals.append(float(img[ch, rr % h, cc % w]))
                else:
                    vals.append(float(img[ch, rr, cc]) if 0 <= rr < h and 0 <= cc < w else 0.0)
    return vals


def local_score_reference(x, sigma, data, patch_size, mode):
    """Kamb & Ganguli's machines with explicit loops over queries, pixels, locations and images.

    mode: "ls" (co-located zero-padded patches), "els" (every circular patch of every image),
    "bbels" (zero padding; a pixel is compared with locations at the same border position:
    rows are "top r", "bottom r" or interior, likewise columns).
    """
    x, data = x.double(), data.double()
    _, _, h, w = x.shape
    half, circular = patch_size // 2, mode == "els"

    def border(r, n):
        return ("start", r) if r < half else ("end", n - r) if r >= n - half else "interior"

    train = {(i, r, c): _patch(data[i], r, c, patch_size, circular)
             for i in range(len(data)) for r in range(h) for c in range(w)}
    out = torch.empty_like(x)
    for n in range(len(x)):
        for r in range(h):
            for c in range(w):
                query = _patch(x[n], r, c, patch_size, circular)
                if mode == "ls":
                    places = [(r, c)]
                elif mode == "els":
                    places = [(a, b) for a in range(h) for b in range(w)]
                else:
                    places = [(a, b) for a in range(h) for b in range(w)
                              if border(a, h) == border(r, h) and border(b, w) == border(c, w)]
                logits, values = [], []
                for i in range(len(data)):
                    for a, b in places:
                        dist = sum((u - v) ** 2 for u, v in zip(query, train[(i, a, b)]))
                        logits.append(-dist / (2 * sigma**2))
                        values.append(data[i, :, a, b])
                out[n, :, r, c] = _softmax_mean(logits, values)
    return out


def patch_composite_reference(x, sigma, data, size):
    """PSPC-Square with explicit loops: every size x size crop inside the image gets its
    posterior mean over the training crops at the same place; pixels average their crops."""
    x, data = x.double(), data.double()
    _, _, h, w = x.shape
    out = torch.zeros_like(x)
    for n in range(len(x)):
        num, count = torch.zeros_like(x[n]), torch.zeros(h, w, dtype=torch.float64)
        for a in range(h - size + 1):
            for b in range(w - size + 1):
                crop = (slice(None), slice(a, a + size), slice(b, b + size))
                logits = [-float(((x[n][crop] - xi[crop]) ** 2).sum()) / (2 * sigma**2) for xi in data]
                num[crop] += _softmax_mean(logits, [xi[crop] for xi in data])
                count[a:a + size, b:b + size] += 1
        out[n] = num / count
    return out


def mixture_reference(x, sigma, log_weights, means, eigvals, eigvecs):
    """Posterior mean with explicit loops over images and components: each component's full
    covariance ``S = U diag(lam) U^T``, its density ``N(x; mu, S + sigma^2 I)`` from
    torch.distributions, its filter ``mu + S (S + sigma^2 I)^-1 (x - mu)`` by a linear solve,
    and a float64 log-sum-exp. Returns the output (x's shape) and the weights (N, K)."""
    flat = x.double().reshape(len(x), -1)
    eye = torch.eye(flat.shape[1], dtype=torch.float64)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    covs = [(U * lam) @ U.T for lam, U in zip(eigvals, eigvecs)]
    out, weights = torch.empty_like(flat), torch.empty(len(x), len(means), dtype=torch.float64)
    for n, (xn, s) in enumerate(zip(flat, sigma)):
        logits, filtered = [], []
        for log_w, mean, cov in zip(log_weights, means, covs):
            noisy = cov + s**2 * eye
            logits.append(float(log_w) + float(torch.distributions.MultivariateNormal(mean, noisy).log_prob(xn)))
            filtered.append(mean + cov @ torch.linalg.solve(noisy, xn - mean))
        top = max(logits)
        w = [math.exp(v - top) for v in logits]
        weights[n] = torch.tensor(w, dtype=torch.float64) / sum(w)
        out[n] = sum(wk * fk for wk, fk in zip(weights[n], filtered))
    return out.reshape(x.shape), weights
