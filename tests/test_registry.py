"""The registry: estimators made by method name, and ``load`` finding the class of a saved file."""

import h5py
import pytest
import torch

from analytic_denoisers import registry
from analytic_denoisers.core.artifact import FileFormatError
from analytic_denoisers.denoisers.gaussian import GaussianDenoiser
from references import tiny_images


def test_per_dataset_defaults_from_the_papers_configs():
    assert registry.make("pca-locality", dataset="cifar10").threshold == 0.05
    assert registry.make("pca-locality", dataset="fashion-mnist").threshold == 0.005
    assert registry.make("pca-locality", dataset="cifar10", threshold=0.2).threshold == 0.2


def test_make_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'no-such-method'"):
        registry.make("no-such-method")


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_make_gives_the_registered_class(name):
    est = registry.make(name)
    assert type(est) is registry.METHODS[name] and registry.CLASSES[type(est).__name__] is type(est)


def test_variants_are_their_method_with_presets_that_explicit_params_override():
    els, bbels = registry.make("els"), registry.make("bbels", patch_size=7)
    assert type(els) is type(bbels) is registry.METHODS["local-score"]
    assert (els.equivariant, els.padding) == (True, "circular")
    assert (bbels.equivariant, bbels.padding, bbels.patch_size) == (True, "zeros", 7)
    assert registry.make("els", padding="zeros").padding == "zeros"
    assert registry.method_of("bbels") == ("local-score", {"equivariant": True, "padding": "zeros"})
    assert set(registry.NAMES) == set(registry.METHODS) | {"els", "bbels"}
    with pytest.raises(ValueError, match=r"unknown hyper-parameters \['rank'\] of els"):
        registry.make("els", rank=3)
    with pytest.raises(ValueError, match="choose one of .*'bbels'"):
        registry.method_of("ELS")


def test_load_finds_a_class_outside_the_registry_only_when_given_it(tmp_path):
    class Mine(GaussianDenoiser):
        pass

    X, x = tiny_images(6, (1, 3, 3)), tiny_images(2, (1, 3, 3), seed=1)
    path = Mine(rank=2).fit(X).save(tmp_path / "mine.h5")
    with pytest.raises(FileFormatError, match="mine.h5: unknown denoiser class 'Mine'"):
        registry.load(path)
    back = registry.load(path, classes=[Mine])
    assert type(back) is Mine and back.rank == 2
    assert torch.equal(back(x, 0.5), Mine(rank=2).fit(X)(x, 0.5))


def test_load_refuses_unusable_parameters(tmp_path):
    path = GaussianDenoiser().fit(tiny_images(4, (1, 3, 3))).save(tmp_path / "g.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["params"] = '{"rank": 0, "chunk_size": 4096}'
    with pytest.raises(FileFormatError, match="g.h5: unusable parameters for GaussianDenoiser"):
        registry.load(path)
