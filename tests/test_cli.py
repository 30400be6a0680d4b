"""The drc command line: help texts, info, generate (from PNG files with a saved pipeline),
and errors as messages."""

import subprocess
import sys

import pytest

from drclib.cli import build_parser, main


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run-notebooks", "build-data", "info", "generate", "train"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["run-notebooks", "--help"])
    assert "--profile" in capsys.readouterr().out


def test_info_prints_sizes(capsys):
    assert main(["info", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "6 styles" in out and "split sample" in out and "CC-BY-SA-4.0" in out


def test_errors_are_messages_not_tracebacks(capsys, tmp_path):
    assert main(["info", "--data", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "drclib.data.build" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run-notebooks", "--profile", "medium"])


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "drclib.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "drc-kit" in r.stdout


def test_generate_writes_pngs_from_png_files(tiny_stickers, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from tests.conftest import tiny_pipeline

    tiny_pipeline(tiny_stickers).save_pretrained(tmp_path / "pipe", copy_base=True)
    files = []
    for i in range(3):
        p = tmp_path / f"h{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA").save(p)
        files.append(str(p))
    args = ["generate", "--pipeline", str(tmp_path / "pipe"), "--history", *files[:2], "--reference", files[2],
            "--alpha-m", "0.4", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (32, 32)
    assert main(args + ["--num-images", "2", "--size", "128", "--out", str(tmp_path / "many.png")]) == 0
    assert Image.open(tmp_path / "many_1.png").size == (128, 128)
    capsys.readouterr()
    assert main(args[:-4] + ["--alpha-m", "1.4", "--out", str(tmp_path / "x.png")]) == 2
    assert "alpha_m must lie in [0, 1]" in capsys.readouterr().err
    assert main(["generate", "--pipeline", str(tmp_path / "none"), "--history", files[0], "--reference", files[1],
                 "--out", str(tmp_path / "y.png")]) == 2
    assert "no DRC pipeline" in capsys.readouterr().err


@pytest.mark.parametrize("command, prog", [("evaluate", "drclib.evaluation"), ("reproduce", "drclib.reproduce"),
                                           ("train", "drclib.train")])
def test_pass_through_commands_show_their_own_help(command, prog, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and prog in capsys.readouterr().out
