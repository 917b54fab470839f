"""Which number format and runtime a backend's towers run in: the `precision` and `runtime` options.

`precision` auto picks, in one place (choose_precision), what pays on the
hardware at hand:

- CUDA: bf16 where the GPU has bf16 units (Ampere and later), else fp16;
- a CPU with bf16 matrix instructions (AMX, AVX-512 BF16): bf16, 2-4x
  faster than fp32 for ViT towers;
- any other CPU: fp32 (bf16 there is emulated and slower than fp32).

Explicit values are taken as asked. Thresholds do not depend on precision:
backends keep their heads and scores in fp32.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Collection

from ..core.errors import BackendLoadError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("torch", "openvino")
# CPU flags (as /proc/cpuinfo spells them) of bf16 matrix instructions.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else BackendLoadError saying what it may be."""
    if precision not in PRECISIONS:
        raise BackendLoadError(
            f"precision '{precision}' is not one of {', '.join(PRECISIONS)}: auto picks bf16 on CPUs with bf16 "
            "matrix units and fp16/bf16 on CUDA, fp32 elsewhere")
    return precision


def check_runtime(runtime: str, device_type: str) -> str:
    """`runtime` if it is one of RUNTIMES and can run on the device, else BackendLoadError."""
    if runtime not in RUNTIMES:
        raise BackendLoadError(f"runtime '{runtime}' is not one of {', '.join(RUNTIMES)}")
    if runtime == "openvino" and device_type != "cpu":
        raise BackendLoadError(
            f"runtime 'openvino' runs image towers on the CPU but device is '{device_type}'; "
            "use device cpu with it, or runtime torch on the GPU")
    return runtime


def choose_precision(requested: str, device_type: str, cpu_flags: Collection[str], cuda_bf16: bool) -> str:
    """The precision to run in: `requested`, or for auto the fastest one that keeps outputs right.

    device_type: "cpu" or "cuda" (anything else runs fp32 on auto); cpu_flags: the CPU's
    feature flags; cuda_bf16: whether the CUDA device has bf16 units.
    """
    check_precision(requested)
    if requested != "auto":
        return requested
    if device_type == "cuda":
        return "bf16" if cuda_bf16 else "fp16"
    if device_type == "cpu" and any(flag in cpu_flags for flag in CPU_BF16_FLAGS):
        return "bf16"
    return "fp32"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo; empty where there is none (not Linux), so auto is fp32."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def resolve_precision(requested: str, device: "torch.device") -> str:
    """choose_precision with the facts of this machine."""
    import torch

    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return choose_precision(requested, device.type, cpu_flags() if device.type == "cpu" else (), cuda_bf16)


def torch_dtype(precision: str) -> "torch.dtype":
    """The torch dtype of a resolved precision (fp32, bf16 or fp16)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
