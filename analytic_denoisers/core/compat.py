"""Imports that need help on some installations."""

import torch


def import_torchvision():
    """Import torchvision, also where its wheel was built for CUDA but torch is a CPU build.

    Such a pair (e.g. torch 2.13.0+cpu with torchvision 0.28.0 from PyPI) fails at import with
    "operator torchvision::nms does not exist". Declaring the schemas of the two missing
    operators first lets everything but ``torchvision.ops`` work (transforms, utils, datasets).
    """
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        lib = torch.library.Library("torchvision", "DEF")  # kept alive on the module below
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision._library = lib
        import torchvision
    return torchvision


def import_diffusers():
    """Import diffusers (an optional extra) after the torchvision fix above, which it needs on a
    CPU build of torch; a clear error where it is not installed."""
    import_torchvision()
    try:
        import diffusers
    except ImportError:
        raise ImportError("diffusers is not installed: pip install 'analytic-denoisers[diffusers]'") from None
    return diffusers
