"""Where and in which precision the networks run: the device a user asked for, and native bf16 detection.

Shared by training, translation, evaluation and stylisation; it depends on torch only.
"""

from __future__ import annotations

import platform

import torch


class DeviceError(ValueError):
    """A device the user asked for is not there; the message says what to use instead."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA Ampere+, x86 CPUs with AVX512-BF16 or AMX, Arm CPUs
    with BF16 via oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if platform.machine().lower() in ("x86_64", "amd64") and hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        # oneDNN also reports bf16 "supported" on AVX-512 CPUs without the BF16 instructions, where it is
        # emulated in fp32 and no faster: only the instructions themselves count.
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU if there is one, else the CPU; an explicit ``cuda`` without a GPU is a DeviceError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(device)


def resolve_precision(requested: str, cpu: bool = False) -> str:
    """Training's ``auto`` -> bf16 where the hardware computes it natively, else fp16 on GPUs, else fp32
    ("no"). Weights and optimizer state stay fp32 either way (README "Speed" has the measured gains)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and not cpu:
        return "bf16" if native_bf16(torch.device("cuda")) else "fp16"
    return "bf16" if native_bf16(torch.device("cpu")) else "no"


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8", "avx_vnni")


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name, its core count and the instruction-set flags that decide the speed of each
    precision (bf16 is native only with avx512_bf16 or AMX; see :func:`native_bf16`), read from
    /proc/cpuinfo where there is one (Linux), else from ``platform``."""
    import os

    model, flags, family = None, set(), {}
    try:
        with open(cpuinfo) as f:
            for line in f:  # the first core's lines describe them all
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and model is None:
                    model = value
                elif key in ("cpu family", "model"):
                    family[key] = value  # tells apart CPUs sold under one name ("AMD EPYC": Zen 2 to Zen 5)
                elif key in ("flags", "Features"):  # x86 | Arm
                    flags = set(value.split())
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    if len(family) == 2:
        model += f" (family {family['cpu family']} model {family['model']})"
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in SPEED_FLAGS if f in flags],
            "native_bf16": native_bf16(torch.device("cpu"))}


def describe_cpu() -> str:
    """One line for benchmark tables, e.g. ``AMD EPYC (family 23 model 49), 2 cores, flags avx2 (no native bf16)``."""
    d = cpu_description()
    flags = " ".join(d["flags"]) or "none of " + "/".join(SPEED_FLAGS[:5])
    return f"{d['model']}, {d['cores']} cores, flags {flags} ({'native' if d['native_bf16'] else 'no native'} bf16)"
