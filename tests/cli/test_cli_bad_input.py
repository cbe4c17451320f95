"""Every bad argument of the command line is a one-line ``error: ...`` with exit code 2, before any
work starts (nothing is written), never a traceback; Ctrl-C in train-unet exits 130 and says where
the checkpoint is."""

import os
import signal
import subprocess
import sys
import time

import pytest

from analytic_denoisers.cli import main


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert main(["fit", "gaussian", "--limit", "30", "-o", "g.h5"]) == 0
    return tmp_path


BAD = [  # (argv, what the message must say)
    (["fit", "gaussian", "--param", "nope=1", "-o", "m.h5"], "unknown hyper-parameters ['nope'] of gaussian"),
    (["fit", "gaussian", "-o", "."], "an existing folder; expected a file"),
    (["fit", "gaussian", "-o", "afile/m.h5"], "afile is a file, so nothing can be written below it"),
    (["fit", "gaussian", "--device", "nonsense", "-o", "m.h5"], "'nonsense' is not a torch device"),
    (["fit", "local-score", "--param", "patch_size=0", "-o", "m.h5"], "patch_size must be a positive odd integer"),
    (["fit", "pca-locality", "--param", "threshold=5", "-o", "m.h5"], "threshold must be a number in [0, 1]"),
    (["fit", "gaussian", "--root", "afile", "-o", "m.h5"], "root afile: a file"),
    (["fit", "gaussian", "--root", "nowhere", "-o", "m.h5"], "root nowhere: no such folder"),
    (["sample", "g.h5", "--rho", "0", "-o", "s.png"], "rho must be a positive number"),
    (["sample", "g.h5", "--nrow", "0", "-o", "s.png"], "--nrow: expected a positive integer"),
    (["sample", "g.h5", "--nrow", "-3", "-o", "s.png"], "--nrow: expected a positive integer"),
    (["sample", "g.h5", "-o", "afile/s.png"], "afile is a file"),
    (["train-unet", "--steps", "2", "--checkpoint", "afile/c.ckpt", "-o", "u.h5"], "afile is a file"),
    (["train-unet", "--steps", "2", "--param", "nope=1", "-o", "u.h5"], "unknown hyper-parameters ['nope'] of UNetDenoiser"),
    (["bench", "--param", "gaussian.nope=1", "-o", "b"], "unknown hyper-parameters ['nope'] of gaussian"),
    (["bench", "--param", "nope.x=1", "-o", "b"], "params given for unknown methods ['nope']"),
    (["bench", "-o", "afile"], "an existing file; expected a folder"),
    (["bench", "--protocol", "no-such-protocol", "-o", "b"], "shipped protocols"),
    (["analyze", "locality", "--threshold", "7", "-o", "a"], "--threshold: expected a number in [0, 1]"),
    (["analyze", "teleport", "-o", "afile/a"], "afile is a file"),
    (["info", "nothing.h5"], "nothing.h5: no such file"),
    (["info", "."], "a folder, not a file saved by this package"),
    (["info", "afile"], "afile: not an HDF5 file"),
]
if not __import__("torch").cuda.is_available():
    BAD.append((["fit", "gaussian", "--device", "cuda", "-o", "m.h5"], "has no CUDA device"))


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_argument_is_one_error_line_before_any_work(place, capsys, argv, message):
    before = sorted(p.name for p in place.iterdir())
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].count("error: ") == 1
    assert sorted(p.name for p in place.iterdir()) == before, "nothing is written"


def test_ctrl_c_in_train_unet_exits_130_and_names_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "u.ckpt"
    command = [sys.executable, "-m", "analytic_denoisers", "train-unet", "--steps", "100000", "--limit", "64",
               "--batch-size", "8", "--param", "base_channels=8", "--checkpoint-every", "3",
               "-o", str(tmp_path / "u.h5")]
    # SIGINT back to its default in the child: a shell starts background jobs with it ignored, and
    # Python then installs no KeyboardInterrupt handler, so Ctrl-C could not reach the training
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # training runs once the first periodic checkpoint is written
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted: the training state is saved in {checkpoint}" in err and "Traceback" not in err, err
