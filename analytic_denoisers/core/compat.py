"""Imports that need help on some installations.

A torchvision wheel built for CUDA beside a CPU build of torch (e.g. torch 2.13.0+cpu with
torchvision 0.28.0 from PyPI) fails at import with "operator torchvision::nms does not exist",
and with it everything that imports torchvision: diffusers, k-diffusion. Declaring the schemas of
the two missing operators first lets everything but ``torchvision.ops`` work (transforms, utils,
datasets, models). :func:`repair_torchvision_import` (run by ``import analytic_denoisers``) makes
the first ``import torchvision`` of the process, whoever does it, retry once that way; it costs
nothing until torchvision is imported and changes nothing where torchvision imports fine.
"""

import importlib.abc
import importlib.machinery
import sys

import torch

_MISSING_OPERATOR = "torchvision::nms"


def _declare_torchvision_operators():
    if getattr(_declare_torchvision_operators, "library", None) is None:
        lib = torch.library.Library("torchvision", "DEF")  # kept alive on the function
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _declare_torchvision_operators.library = lib


class _RetryingLoader(importlib.abc.Loader):
    """torchvision's own loader, executed a second time after the operators are declared when
    the first execution fails on them."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # resource readers and the like: torchvision's own loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        except RuntimeError as err:
            if _MISSING_OPERATOR not in str(err):
                raise
            _declare_torchvision_operators()
            self.loader.exec_module(module)
        _remove_finder()


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Finds torchvision where the path finder does and hands it the retrying loader; removed
    once torchvision is imported (``importlib.util.find_spec`` alone does not remove it)."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RetryingLoader(spec.loader)
        return spec


def _remove_finder():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionFinder)]


def repair_torchvision_import():
    """Make the next first ``import torchvision`` survive a CUDA torchvision beside a CPU torch.

    A no-op when torchvision is imported already or the repair is in place."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())


def import_torchvision():
    """torchvision, imported through the repair of :func:`repair_torchvision_import`."""
    repair_torchvision_import()
    import torchvision
    return torchvision


def import_diffusers():
    """diffusers (an optional extra) after the torchvision repair, which it needs on a CPU build
    of torch; a clear error where it is not installed."""
    import_torchvision()
    try:
        import diffusers
    except ImportError:
        raise ImportError("diffusers is not installed: pip install 'analytic-denoisers[diffusers]'") from None
    return diffusers


def import_faiss(required=True):
    """faiss (an optional extra, ``faiss-cpu``); with ``required=False`` None where it is missing."""
    try:
        import faiss
    except ImportError:
        if not required:
            return None
        raise ImportError("faiss is not installed: pip install 'analytic-denoisers[faiss]' (or faiss-cpu), "
                          "or use index='exact'") from None
    return faiss
