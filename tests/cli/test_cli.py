"""The command-line interface (fit, sample, info, train-unet), run in-process on the shipped default data."""

import json

import numpy as np
import pytest
from PIL import Image

import analytic_denoisers as ad
from analytic_denoisers.cli import main


@pytest.mark.parametrize("method, extra", [
    ("gaussian", ["--param", "rank=20"]), ("empirical", ["--labels"]),
    ("local-score", ["--param", "patch_size=3", "--labels"]), ("patch-composite", ["--param", "patch_size=4"]),
    ("nearest", []), ("sigma-cfdm", ["--param", "num_noise=2"]), ("knn", ["--param", "n_neighbors=20"]),
    ("gaussian-mixture", ["--param", "components=classes", "--labels"]), ("golddiff", ["--labels"]),
    ("pca-locality", ["--param", "threshold=0", "--param", "temperature=2"]), ("patch-flex", ["--param", "mass=0.5"]),
])
def test_fit_sample_info(tmp_path, capsys, method, extra):
    model = tmp_path / f"{method}.h5"
    assert main(["fit", method, "--limit", "300", "--device", "cpu", "-o", str(model)] + extra) == 0
    den = ad.load(model)
    assert den.n_samples_seen_ == 300 and den.image_shape_ == (1, 28, 28)

    out = tmp_path / "grid.png"
    assert main(["sample", str(model), "-n", "6", "--steps", "4", "--nrow", "3",
                 "--device", "cpu", "-o", str(out)]) == 0
    arr = np.load(tmp_path / "grid.npy")
    assert arr.shape == (6, 1, 28, 28) and np.isfinite(arr).all()
    with Image.open(out) as img:
        assert img.size == (2 * (3 * 30 + 2), 2 * (2 * 30 + 2))  # 3 x 2 tiles of 28 px + padding, x2

    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["n_samples"] == 300 and meta["class"] == type(den).__name__


def test_sampling_is_seeded(tmp_path):
    model = tmp_path / "g.h5"
    assert main(["fit", "gaussian", "--limit", "100", "--device", "cpu", "-o", str(model)]) == 0
    runs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main(["sample", str(model), "-n", "2", "--steps", "3", "--seed", seed,
                     "--device", "cpu", "-o", str(tmp_path / f"{name}.png")]) == 0
        runs.append(np.load(tmp_path / f"{name}.npy"))
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_errors_are_reported_with_exit_code(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5" in capsys.readouterr().err
    assert main(["fit", "gaussian", "--param", "rank=0", "-o", str(tmp_path / "g.h5")]) == 2
    assert "rank" in capsys.readouterr().err
    assert main(["fit", "gaussian", "--limit", "50", "--labels", "-o", str(tmp_path / "g.h5")]) == 2
    assert "does not use class labels" in capsys.readouterr().err
    assert main(["fit", "gaussian", "--limit", "50", "-o", str(tmp_path / "g.h5")]) == 0
    assert main(["sample", str(tmp_path / "g.h5"), "--label", "3", "-o", str(tmp_path / "s.png")]) == 2
    assert "not class-conditional" in capsys.readouterr().err
    for bad in (["fit", "no-such-method", "-o", "x.h5"], ["fit", "gaussian", "--limit", "0", "-o", "x.h5"],
                ["sample", "x.h5", "-n", "0"]):
        with pytest.raises(SystemExit):
            main(bad)


def test_train_unet_resume_sample_info(tmp_path, capsys):
    out, ckpt = tmp_path / "unet.h5", tmp_path / "unet.ckpt"
    args = ["train-unet", "--limit", "16", "--batch-size", "4", "--param", "base_channels=8",
            "--param", "channel_mult=[1,2]", "--checkpoint-every", "1", "--device", "cpu", "-o", str(out)]
    assert main(args + ["--steps", "2"]) == 0
    assert ckpt.is_file() and (tmp_path / "unet.ckpt.log.csv").is_file()  # default checkpoint path
    capsys.readouterr()
    assert main(args + ["--steps", "3"]) == 0  # the same command with more steps resumes
    assert "resuming from" in capsys.readouterr().err
    den = ad.load(out)
    assert den.n_steps_ == 3 and den.n_samples_seen_ == 16 and den.get_params()["channel_mult"] == (1, 2)
    assert main(["sample", str(out), "-n", "2", "--steps", "2", "--device", "cpu", "-o", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "UNetDenoiser"
    assert main(args + ["--steps", "4", "--lr", "0.5"]) == 2  # a checkpoint of other settings
    assert "different hyper-parameters" in capsys.readouterr().err
    assert main(args + ["--param", "colour=1"]) == 2
    assert "unknown hyper-parameters ['colour'] of UNetDenoiser" in capsys.readouterr().err
