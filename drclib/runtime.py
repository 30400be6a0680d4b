"""Where the kit runs and how it repeats itself: device choice, CPU flags and seeds.

Every notebook starts with ``DEVICE = pick_device("auto")`` and ``seed_everything(SEED)``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

_VALID_DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device to compute on.

    ``"auto"`` (or ``None``) picks CUDA if present, then Apple's MPS, then the CPU. A concrete
    name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is checked to exist.

    On the CPU this also calls ``torch.set_flush_denormal(True)``: tiny ("denormal") floats
    appear as training goes on and slow a small transformer 2-4x on the CPUs we measured.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name).strip().lower()
    base = name.split(":")[0]
    if base not in _VALID_DEVICES:
        raise ValueError(f"unknown device {name!r}: use one of {', '.join(_VALID_DEVICES)} "
                         "(optionally with an index, e.g. 'cuda:1')")
    if base == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    elif base == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available here; "
                           "use DEVICE='auto' or 'cpu'")
    elif base == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was asked for but Apple MPS is not available here; "
                           "use DEVICE='auto' or 'cpu'")
    device = torch.device(name)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    return device


def bf16_fast(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 autocast pays off on ``device``: on CUDA, and on CPUs with native bf16
    instructions (AVX512-BF16 or AMX). Elsewhere torch emulates bf16 and a matmul runs ~70x
    slower than in float32 (measured on an AVX2-only AMD EPYC, torch 2.14), so training code
    takes ``bf16=None`` to mean "use it where it is fast"."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(bf16: bool | None, device: str | torch.device) -> bool:
    """``bf16`` as asked, or :func:`bf16_fast` when it is ``None``."""
    return bf16_fast(device) if bf16 is None else bool(bf16)


def bf16_from_flag(no_bf16: bool, device: str | torch.device) -> bool:
    """The precision a training command runs in: float32 when given ``--no-bf16``, else bf16
    autocast where it is fast (:func:`bf16_fast`). Resolved, so a card records what ran."""
    return resolve_bf16(False if no_bf16 else None, device)


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all GPUs).

    Returns the seed, so a notebook can write ``SEED = seed_everything(SEED)``. Library code
    never relies on these global generators: it takes a ``seed`` or a ``numpy.random.Generator``
    argument, so results do not depend on what ran before.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses started from here
    return seed


def cpu_matrix_isa(flags: set[str]) -> str:
    """The fastest matrix instructions a CPU's flags (``/proc/cpuinfo``) offer torch's bf16 and
    float32 kernels: two machines with the same model name ("Intel(R) Xeon(R) Processor") train
    about twice as fast with AMX as without, so a figure's machine line names them."""
    for flag, name in (("amx_bf16", "AMX-bf16"), ("avx512_bf16", "AVX-512-bf16"), ("avx512f", "AVX-512"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return name
    return ""


def describe_machine(device="cpu") -> str:
    """One line naming the machine a figure was measured on (architecture, CPU model, its matrix
    instructions (:func:`cpu_matrix_isa`), cores, device), for model cards and result files."""
    import os
    import platform

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpu = model or platform.processor()
    isa = cpu_matrix_isa(flags)
    return f"{platform.machine()} {cpu}".strip() + (f" ({isa})" if isa else "") + f", {os.cpu_count()} cores, device {device}"


def thread_env(threads: int) -> dict:
    """The environment for a child process that should use ``threads`` torch threads (OpenMP and
    MKL read it at start-up): two such processes of one thread each use the 2-core CPU's cores
    without oversubscribing them."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
