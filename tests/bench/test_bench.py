"""The benchmark harness (bench) on tiny data: protocol, repeatability, writers and the CLI."""

import csv
import json
import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers import bench, metrics
from analytic_denoisers.bench import report
from analytic_denoisers.bench.report import reproducible
from analytic_denoisers.cli import main
from references import TINY_UNET

N_TRAIN = 48


def tiny_protocol(reference, **overrides):
    """The default data's first images, two sigmas, two samples of two steps."""
    return bench.make_protocol({
        "reference": str(reference), "train_limit": N_TRAIN,
        "denoising": {"n_images": 4, "sigmas": [0.1, 2.0], "batch_size": 3},
        "sampling": {"n_samples": 2, "steps": 2},
        "gate": {"n_images": 8, "sigmas": [0.5]},
        **overrides,
    })


@pytest.fixture(scope="module")
def train_images():
    return ad.datasets.load("default")[:N_TRAIN]


@pytest.fixture(scope="module")
def gaussian_file(tmp_path_factory, train_images):
    return ad.GaussianDenoiser().fit(train_images).save(tmp_path_factory.mktemp("ref") / "gauss.h5")


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory, train_images):
    return ad.UNetDenoiser(**TINY_UNET).fit(train_images).save(tmp_path_factory.mktemp("ref") / "unet.h5")


def test_identical_methods_agree_perfectly(gaussian_file):
    results = bench.run(tiny_protocol(gaussian_file, methods=["gaussian"]), progress=False, log=lambda s: None)
    assert results["reference"]["trained_on_same_images"]
    for row in results["denoising"]["methods"]["gaussian"]["by_sigma"]:
        assert row["r2"] == 1.0 and row["pearson"] == pytest.approx(1.0) and row["mse"] == 0.0
        assert row["explained_variance"] == 1.0
    sampled = results["sampling"]["methods"]["gaussian"]
    assert sampled["r2"] == 1.0 and sampled["mse"] == 0.0 and sampled["x0_by_step"]["r2"] == [1.0, 1.0]
    assert sampled["denoiser_calls"] == 3  # Heun: two calls, then an Euler step to 0
    gate = results["gate"]["by_sigma"][0]
    assert gate["reference_mse"] == gate["gaussian_mse"] and not results["gate"]["passed"]


def test_every_method_against_a_unet_is_repeatable(unet_file):
    protocol = tiny_protocol(unet_file)
    first = bench.run(protocol, progress=False, log=lambda s: None)
    second = bench.run(protocol, progress=False, log=lambda s: None)
    assert reproducible(first) == reproducible(second)
    assert set(first["denoising"]["methods"]) == set(ad.registry.METHODS)
    for entry in first["denoising"]["methods"].values():
        assert [r["sigma"] for r in entry["by_sigma"]] == [0.1, 2.0]
        assert all(math.isfinite(r[m]) for r in entry["by_sigma"] for m in metrics.METRICS)
    # the "snr" patch size became the data's schedule
    assert first["denoising"]["methods"]["local-score"]["params"]["patch_size"]["__schedule__"] == "Table"
    # other sampling seeds give other samples
    other = bench.run(tiny_protocol(unet_file, sampling={"n_samples": 2, "steps": 2, "seed": 7}),
                          progress=False, log=lambda s: None)
    assert not torch.equal(other["_images"]["samples"]["reference"], first["_images"]["samples"]["reference"])


def test_noise_is_per_sample(gaussian_file):
    # sample i depends only on seed + i: two samples from seed 0 contain the one sample from seed 1
    two = bench.run(tiny_protocol(gaussian_file, methods=["gaussian"]), progress=False, log=lambda s: None)
    one = bench.run(tiny_protocol(gaussian_file, methods=["gaussian"],
                                      sampling={"n_samples": 1, "steps": 2, "seed": 1}),
                        progress=False, log=lambda s: None)
    # equal up to float32 GEMM rounding, which differs between batch sizes and grows from sigma = 80
    a, b = one["_images"]["samples"]["gaussian"][0], two["_images"]["samples"]["gaussian"]
    assert (a - b[1]).abs().max() < 2e-3 < (a - b[0]).abs().max()


def test_reference_trained_on_other_images_is_flagged(tmp_path, train_images):
    other = ad.GaussianDenoiser().fit(train_images[:20]).save(tmp_path / "other.h5")
    lines = []
    results = bench.run(tiny_protocol(other, methods=["gaussian"]), progress=False, log=lines.append)
    assert not results["reference"]["trained_on_same_images"]
    assert any("WARNING: trained on different images" in line for line in lines)


def test_writers(tmp_path, gaussian_file):
    results = bench.run(tiny_protocol(gaussian_file, methods=["gaussian", "empirical"]),
                            progress=False, log=lambda s: None)
    paths = bench.write(results, tmp_path / "out", command="analytic-denoisers bench ...")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["command"] == "analytic-denoisers bench ..." and "_images" not in saved
    assert saved["denoising"]["methods"]["empirical"]["by_sigma"][1]["sigma"] == 2.0
    with open(tmp_path / "out" / "denoising.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 and {r["method"] for r in rows} == {"reference", "gaussian", "empirical"}
    row = next(r for r in rows if r["method"] == "empirical" and float(r["sigma"]) == 2.0)
    saved_row = saved["denoising"]["methods"]["empirical"]["by_sigma"][1]
    assert all(float(row[k]) == saved_row[k] for k in (*metrics.METRICS, "own_mse"))
    with open(tmp_path / "out" / "sampling.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["empirical"]["r2"]) == saved["sampling"]["methods"]["empirical"]["r2"]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Quality gate" in text and "| empirical |" in text and "analytic-denoisers bench ..." in text
    # the spread over images beside every summary: quartiles in the results, the CSVs and the tables
    for entry in [*saved["denoising"]["methods"]["empirical"]["by_sigma"], saved["sampling"]["methods"]["gaussian"]]:
        for m in metrics.METRICS:
            assert entry[f"{m}_q25"] <= entry[f"{m}_q75"]
    assert float(row["r2_q25"]) == saved_row["r2_q25"] and float(rows["gaussian"]["mse_q75"]) == \
        saved["sampling"]["methods"]["gaussian"]["mse_q75"]
    g = saved["sampling"]["methods"]["gaussian"]
    assert f"| gaussian | {report._fmt(g['r2'])} [{report._fmt(g['r2_q25'])}, {report._fmt(g['r2_q75'])}] |" in text


def test_figures_name_every_line_and_zoom(monkeypatch, gaussian_file, tmp_path):
    results = bench.run(tiny_protocol(gaussian_file, methods=["gaussian", "empirical", "nearest"]),
                        progress=False, log=lambda s: None)
    figures, rows = [], []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig) or path)
    monkeypatch.setattr(report, "save_labelled_rows", lambda r, path, **kw: rows.extend(r) or path)
    bench.write(results, tmp_path)
    legend = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert set(legend) == {"gaussian", "empirical", "nearest", "reference"}
    r2 = results["sampling"]["methods"]["nearest"]["r2"]
    assert ("nearest  R² " + report._fmt(r2)) in [label for label, _ in rows]
    r2_panel = figures[0].axes[0]
    assert len(r2_panel.collections) == 3  # a quartile band per method


def test_zoom_limits():
    bottom, top, below = report.zoom_limits([1.0, 0.99, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.9, -3.0, float("nan")])
    assert -3.0 < bottom < 0.9 and 1.0 < top <= 1.01 and below == 1  # one poor point does not set the scale
    assert report.zoom_limits([0.5, 0.5]) == pytest.approx((0.495, 0.505, 0))
    assert report.zoom_limits([]) == (-0.05, 1.02, 0)
    assert report.zoom_limits([0.5, 0.9]) == pytest.approx((0.48, 0.92, 0))  # few points: none left out
    dip = [0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.86, 0.85, 0.86, 0.9, 0.95, 0.97, 0.98, 0.98]  # one method
    assert report.zoom_limits(dip)[2] == 0
    assert report.zoom_limits([1.1, 1.2])[0] < report.zoom_limits([1.1, 1.2])[1]


@pytest.mark.parametrize("overrides, match", [
    ({"methods": ["nope"]}, "methods must be"),
    ({"colour": 1}, "unknown protocol key 'colour'"),
    ({"sampling": {"stpes": 3}}, "unknown protocol key 'sampling.stpes'; known in 'sampling'"),
    ({"sampling": {"vp": {"spacing": "leading"}}}, "unknown protocol key 'sampling.vp.spacing'"),
    ({"sampling": {"vp": {"timestep_spacing": "uniform"}, "schedule": "vp"}}, "spacing must be one of"),
    ({"sampling": {"schedule": "sigmas"}}, "needs the list sampling.sigmas"),
    ({"sampling": {"schedule": "sigmas", "sigmas": [1.0, 2.0]}}, "strictly decreasing"),
    ({"sampling": {"schedule": "cosine"}}, "schedule must be one of"),
    ({"sampling": {"clip_sample": 1.0}}, "needs sampling.schedule \"vp\" and sampling.sampler \"ddim\""),
    ({"sampling": {"final": "last"}}, "final must be one of"),
    ({"sampling": {"sampler": "rk4"}}, "unknown sampler"),
    ({"denoising": {"n_images": 0}}, "n_images must be a positive int"),
    ({"gate": {"sigmas": [0.5, -1]}}, "positive numbers"),
    ({"train_limit": -5}, "train_limit must be a positive int"),
    ({"sampling": 3}, "section 'sampling' must be an object"),
    ({"params": {"gaussian": 5}}, "params of 'gaussian' must be an object"),
    ({"params": {"nope": {}}}, "unknown methods"),
    ({"sampling": {"sigma_max": 0}}, "sigma_max must be a positive number"),
    ({"denoising": {"seed": -1}}, "seed must be an integer >= 0"),
    ({"methods": ["els", "els"]}, "distinct names"),
    ({"params": {"gaussian": {"rank": "calibrated"}}, "methods": ["gaussian"]}, "needs candidates: set calibration.candidates.rank"),
    ({"calibration": {"metric": "l1"}}, "metric must be one of"),
    ({"calibration": {"n_images": 0}}, "calibration.n_images must be a positive int"),
    ({"calibration": {"candidates": {"patch_size": []}}}, "candidates.patch_size must be a non-empty list"),
    ({"calibration": {"candidates": {"patch_size": ["big"]}}}, "candidates.patch_size"),
    ({"calibration": {"candidates": 3}}, "'calibration.candidates' must be an object"),
])
def test_bad_protocols_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        bench.make_protocol(overrides)


def test_protocol_file_and_missing_reference(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"methods": ["gaussian"], "sampling": {"steps": 3}}))
    protocol = bench.make_protocol({"sampling": {"n_samples": 5}}, path=tmp_path / "p.json")
    assert protocol["methods"] == ["gaussian"] and protocol["sampling"]["steps"] == 3
    assert protocol["sampling"]["n_samples"] == 5 and protocol["sampling"]["sampler"] == "heun"
    # params merge per method: one method's settings keep the others' defaults
    merged = bench.make_protocol({"params": {"gaussian": {"rank": 5}, "local-score": {"chunk_size": 9}}})
    assert merged["params"]["gaussian"] == {"rank": 5}
    assert merged["params"]["local-score"] == {"patch_size": "snr", "chunk_size": 9}
    assert merged["params"]["patch-composite"] == merged["params"]["els"] == {"patch_size": "snr"}
    # candidates merge per hyper-parameter
    candidates = bench.make_protocol({"calibration": {"candidates": {"threshold": [0.01, 0.1]}}})["calibration"]["candidates"]
    assert candidates == {"patch_size": list(range(3, 29, 2)), "threshold": [0.01, 0.1]}
    with pytest.raises(FileNotFoundError, match="no such protocol file"):
        bench.make_protocol(path=tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no shipped reference"):
        bench.reference_path(bench.make_protocol({"dataset": "mnist"}))


def test_bench_cli_in_process(tmp_path, unet_file, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--reference", str(unet_file), "--limit", str(N_TRAIN), "--methods", "gaussian,pca-locality",
                 "--n-images", "3", "--sigmas", "0.5,5", "-n", "2", "--steps", "2", "--sampler", "euler",
                 "--param", "pca-locality.threshold=0.02", "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "quality gate" in printed and "wrote" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["sampling"]["sampler"] == "euler" and saved["protocol"]["methods"] == ["gaussian", "pca-locality"]
    assert saved["denoising"]["methods"]["pca-locality"]["params"]["threshold"] == 0.02
    assert saved["sampling"]["methods"]["gaussian"]["denoiser_calls"] == 2
    assert saved["command"].startswith("analytic-denoisers bench --reference")
    assert main(["bench", "--reference", str(tmp_path / "nope.h5"), "-o", str(out)]) == 2


def test_calibrated_patch_sizes_are_scales_calibrate_against_the_reference_and_are_used(unet_file, train_images):
    overrides = {"methods": ["local-score", "bbels"], "sampling": {"n_samples": 2, "steps": 3},
                 "calibration": {"n_images": 2, "candidates": {"patch_size": [1, 3, 9]}}}
    calibrated = tiny_protocol(unet_file, **overrides, params={
        "local-score": {"patch_size": "calibrated"}, "bbels": {"patch_size": "calibrated", "chunk_size": 16}})
    results = bench.run(calibrated, progress=False, log=lambda s: None)
    # the schedule is what scales.calibrate picks on the test images after the denoising ones, at the sampling sigmas
    X_test = ad.datasets.load("default", "test")[4:6]
    grid = bench.sampling_grid(calibrated["sampling"])["sigmas"][:-1]
    ref = ad.load(unet_file)
    for name, est in (("local-score", ad.LocalScoreDenoiser()), ("bbels", ad.registry.make("bbels", chunk_size=16))):
        expected = ad.scales.calibrate(est.fit(train_images), "patch_size", [1, 3, 9], ref, X_test, grid,
                                       seed=3_000_000, progress=False)
        entry = results["denoising"]["methods"][name]
        record = entry["calibration"]["patch_size"]
        assert record["chosen"] == [expected.candidates[k] for k in expected.best] and record["n_images"] == 2
        assert record["scores"] == expected.scores.tolist() and record["sigmas"] == grid.tolist()
        assert record["snr_rule"] == [ad.scales.snr_resolution_schedule(train_images, grid)(s) for s in grid.tolist()]
        assert entry["params"]["patch_size"] == expected.schedule.to_dict()
    # sampling used the calibrated schedule: the same samples as with the schedule given explicitly
    tables = {name: ad.scales.json_object_hook(results["denoising"]["methods"][name]["params"]["patch_size"])
              for name in ("local-score", "bbels")}
    explicit = tiny_protocol(unet_file, **overrides, params={
        "local-score": {"patch_size": tables["local-score"]}, "bbels": {"patch_size": tables["bbels"], "chunk_size": 16}})
    again = bench.run(explicit, progress=False, log=lambda s: None)
    for name in tables:
        assert torch.equal(results["_images"]["samples"][name], again["_images"]["samples"][name])
    text = report.markdown(results)
    assert "## Calibrated hyper-parameters" in text and "| σ | local-score patch_size | bbels patch_size | SNR rule |" in text


def test_bench_cli_calibrates_a_variant(tmp_path, unet_file):
    out = tmp_path / "bench"
    assert main(["bench", "--reference", str(unet_file), "--limit", str(N_TRAIN), "--methods", "els",
                 "--param", "els.patch_size=calibrated", "--calibration-candidates", "patch_size=[1,3]",
                 "--calibration-images", "1", "--n-images", "1", "--sigmas", "0.5", "-n", "1", "--steps", "2",
                 "--sampler", "euler", "--gate-images", "2", "-o", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["calibration"]["candidates"] == {"patch_size": [1, 3]}
    entry = saved["denoising"]["methods"]["els"]
    assert entry["params"]["equivariant"] and entry["params"]["padding"] == "circular"
    record = entry["calibration"]["patch_size"]
    assert record["n_images"] == 1 and len(record["chosen"]) == 2 and set(record["chosen"]) <= {1, 3}
    assert "## Calibrated hyper-parameters" in (out / "results.md").read_text()
