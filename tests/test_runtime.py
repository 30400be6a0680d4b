"""drclib.runtime and drclib.config: devices, seeds, profiles."""

import random

import numpy as np
import pytest
import torch

from drclib import pick_device, seed_everything
from drclib.config import PROFILES, Profile, get_profile


def test_auto_device_is_available_and_cpu_flushes_denormals():
    dev = pick_device("auto")
    assert dev.type in ("cpu", "cuda", "mps")
    if dev.type == "cpu":
        # a denormal float becomes 0 once flush-to-zero is on
        assert torch.tensor([1e-42], dtype=torch.float32).item() == 0.0
    assert pick_device(None) == dev
    assert pick_device(torch.device("cpu")).type == "cpu"


def test_bad_device_names_are_explained():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")


def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(123)
    a = draw()
    seed_everything(123)
    b = draw()
    assert a == b
    seed_everything(124)
    assert draw() != a


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "7", True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises((TypeError, ValueError)):
        seed_everything(bad)


def test_profiles():
    assert set(PROFILES) == {"quick", "full"}
    quick, full = get_profile("quick"), get_profile("FULL")
    assert quick.n_users < full.n_users and quick.n_triplets < full.n_triplets
    assert get_profile(quick) is quick
    assert quick.replace(n_users=3).n_users == 3 and quick.n_users != 3
    assert isinstance(quick, Profile)
    with pytest.raises(ValueError, match="unknown profile 'medium'"):
        get_profile("medium")


def test_cpu_matrix_isa_names_the_fastest_instructions():
    from drclib.runtime import cpu_matrix_isa, describe_machine

    assert cpu_matrix_isa({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) == "AMX-bf16"
    assert cpu_matrix_isa({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512-bf16"
    assert cpu_matrix_isa({"avx2", "avx512f"}) == "AVX-512"
    assert cpu_matrix_isa({"avx2", "fma"}) == "AVX2"
    assert cpu_matrix_isa(set()) == ""
    line = describe_machine("cpu")
    assert line.endswith("cores, device cpu") and "()" not in line


def test_bf16_from_flag_resolves_what_a_command_runs_in():
    """--no-bf16 means float32; without it, bf16 where it is fast. Never None, so cards record it."""
    from drclib.runtime import bf16_fast, bf16_from_flag

    assert bf16_from_flag(True, "cpu") is False
    assert bf16_from_flag(False, "cpu") is bf16_fast("cpu")
