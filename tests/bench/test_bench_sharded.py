"""The benchmark under torchrun (2 processes, gloo on the CPU): the softmax denoisers' training set
sharded, the reference's and the Gaussian's batches split by rows, and the same metric CSVs as the
single-process run."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import analytic_denoisers as ad
from analytic_denoisers.cli import main
from references import TINY_UNET

N_TRAIN = 40
METHODS = "gaussian,empirical,pca-locality,local-score,patch-composite,nearest"
SECONDS = {"seconds_per_call", "seconds", "peak_mib"}


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    images = ad.datasets.load("default")[:N_TRAIN]
    return ad.UNetDenoiser(**TINY_UNET).fit(images).save(tmp_path_factory.mktemp("ref") / "unet.h5")


def rows(path):
    """The CSV's rows without its timing columns."""
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in SECONDS} for row in csv.DictReader(f)]


def test_torchrun_bench_gives_the_single_process_metrics(tmp_path, unet_file):
    # 10 steps, as the default protocol: with 3 Heun steps from sigma = 80 this untrained reference and
    # the Gaussian of 40 images amplify float32 rounding (a batch split in two) from 1e-7 to 1e-3
    args = ["bench", "--reference", str(unet_file), "--limit", str(N_TRAIN), "--methods", METHODS,
            "--n-images", "5", "--sigmas", "0.05,0.5,5", "-n", "3", "--steps", "10", "--sampler", "heun",
            "--gate-images", "5", "--gate-sigmas", "0.5", "--param", "local-score.patch_size=3",
            "--param", "patch-composite.patch_size=4", "--threads", "1"]
    assert main([*args, "-o", str(tmp_path / "single")]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "analytic_denoisers",
                           *args, "-o", str(tmp_path / "sharded")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("wrote") == 1  # rank 0 writes
    for name in ("denoising.csv", "sampling.csv"):
        single, sharded = rows(tmp_path / "single" / name), rows(tmp_path / "sharded" / name)
        assert [r["method"] for r in single] == [r["method"] for r in sharded]
        for a, b in zip(single, sharded):
            for key in a:
                if key == "method" or a[key] == "":
                    assert a[key] == b[key]
                else:
                    assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5, abs=1e-6), (name, a["method"], key)
    saved = json.loads((tmp_path / "sharded" / "results.json").read_text())
    assert saved["environment"]["world_size"] == 2
    assert saved["environment"]["sharded_methods"] == ["empirical", "pca-locality", "local-score", "patch-composite"]
    assert saved["command"].startswith("torchrun --nnodes 1 --nproc-per-node 2 -m analytic_denoisers bench")
    assert json.loads((tmp_path / "single" / "results.json").read_text())["environment"]["world_size"] == 1
