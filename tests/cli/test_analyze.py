"""`analytic-denoisers analyze`: each analysis run in-process on a Gaussian fitted to the default data."""

import json

import pytest

import analytic_denoisers as ad
from analytic_denoisers.cli import main


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    X = ad.datasets.load("default")[:200]
    return ad.GaussianDenoiser(rank=20).fit(X).save(tmp_path_factory.mktemp("ref") / "ref.h5")


@pytest.mark.parametrize("name, extra, files", [
    ("trajectory", ["-n", "3", "--steps", "5", "--perturb-steps", "0,4"],
     ["trajectory.json", "trajectory.png", "trajectory-x0.png"]),
    ("chromatography", ["-n", "4", "--steps", "6"], ["chromatography.json", "chromatography.png"]),
    ("locality", ["--n-images", "2", "--sigmas", "0.1,1", "--pixels", "3:4,20:20"], ["locality.json", "locality.png"]),
])
def test_analyze_cli(tmp_path, small_reference, name, extra, files):
    out = tmp_path / name
    assert main(["analyze", name, "--reference", str(small_reference), "--limit", "200", "--device", "cpu",
                 "-o", str(out)] + extra) == 0
    saved = json.loads((out / files[0]).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["command"].startswith(f"analytic-denoisers analyze {name}") and saved["reference"]
    assert all((out / f).is_file() for f in files)
    if name == "trajectory":
        assert saved["perturbation"]["steps"] == [0, 4] and len(saved["top2"]["measured"]) == 3
    if name == "chromatography":
        assert saved["bands"] == ["28x28", "14x14", "7x7", "4x4", "2x2", "1x1"]
    if name == "locality":
        assert saved["pixels"] == [3 * 28 + 4, 20 * 28 + 20] and saved["threshold"] == 0.005


def test_analyze_teleport_cli(tmp_path, small_reference):
    out = tmp_path / "teleport"
    assert main(["analyze", "teleport", "--reference", str(small_reference), "--limit", "200", "-n", "2",
                 "--steps", "6", "--skips", "2,4", "--device", "cpu", "-o", str(out)]) == 0
    saved = json.loads((out / "teleport.json").read_text())
    assert [r["skip"] for r in saved["by_skip"]] == [0, 2, 4] and saved["command"].startswith("analytic-denoisers analyze")
    assert (out / "teleport.png").is_file() and (out / "teleport-samples.png").is_file()


def test_analyze_cli_rejects_bad_pixels(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "locality", "--pixels", "3"])
    assert "row:col" in capsys.readouterr().err
