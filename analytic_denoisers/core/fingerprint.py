"""Order- and chunk-invariant fingerprints and summaries of image sets."""

import hashlib

import torch

_FINGERPRINT_MOD = 2**256


def data_fingerprint(x):
    """Order- and chunk-invariant fingerprint of a set of images.

    The sum, modulo 2**256, of the SHA-256 of each image's float32 bytes: two fits on the same
    images give the same fingerprint whatever their order or chunking, and the fingerprint of a
    merged fit is the sum of the parts' (see :func:`merge_fingerprints`).

    Parameters
    ----------
    x : Tensor of shape (N, ...)

    Returns
    -------
    str, 64 hexadecimal digits.
    """
    rows = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).numpy()
    total = sum(int.from_bytes(hashlib.sha256(r.tobytes()).digest(), "big") for r in rows)
    return f"{total % _FINGERPRINT_MOD:064x}"


def merge_fingerprints(a, b):
    """Fingerprint of the union of two image sets from their fingerprints."""
    return f"{(int(a, 16) + int(b, 16)) % _FINGERPRINT_MOD:064x}"


SUMMARY = ("image_shape_", "n_samples_seen_", "value_range_", "fingerprint_")


def data_summary(X):
    """Image shape, count, value range and fingerprint of training images (N, C, H, W)."""
    return {
        "image_shape_": tuple(X.shape[1:]),
        "n_samples_seen_": int(X.shape[0]),
        "value_range_": (float(X.min()), float(X.max())),
        "fingerprint_": data_fingerprint(X),
    }


def merge_summaries(old, new):
    """The summary of the union of two image sets (``old`` may be None: then ``new``)."""
    if old is None:
        return dict(new)
    if new["image_shape_"] != old["image_shape_"]:
        raise ValueError(f"new data has image shape {new['image_shape_']}, but earlier data had "
                         f"shape {old['image_shape_']}")
    lo, hi = new["value_range_"]
    return {"image_shape_": old["image_shape_"],
            "n_samples_seen_": new["n_samples_seen_"] + old["n_samples_seen_"],
            "value_range_": (min(lo, old["value_range_"][0]), max(hi, old["value_range_"][1])),
            "fingerprint_": merge_fingerprints(new["fingerprint_"], old["fingerprint_"])}
