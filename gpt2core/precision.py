"""Devices, numeric precision and the peak FLOPs that model FLOPs utilisation is measured against.

Mixed precision by device, when ``mixed_precision`` is on and ``precision`` is "auto":

- CUDA with bf16 (Ampere and newer): bf16 autocast, no loss scaling;
- CUDA without bf16 (Volta, Turing): fp16 autocast with a GradScaler;
- CPU: bf16 autocast only where the CPU computes bf16 natively (AMX or AVX512-BF16). Elsewhere
  (AVX2-only machines) bf16 is emulated and about 20x slower than fp32, so training stays in
  fp32. ``GPT2TUI_CPU_BF16=1`` / ``=0`` overrides the detection (``cpu_has_native_bf16``);
- MPS: fp32 (autocast there is still patchy across macOS versions).

``precision`` bf16 / fp16 / fp32 forces a choice (fp16 on the CPU works, with loss scaling, but is
slower than fp32 there: it exists to reproduce a GPU's fp16 numerics). TF32 matmuls are switched on
for Ampere+ GPUs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from gpt2core.config import TrainConfig
from gpt2core.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16", "fp16" or "fp32"
    device_type: str  # "cuda", "cpu", "mps"
    reason: str  # why this one, for the log

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; torch.amp.GradScaler scales on CUDA and the CPU.
        return self.name == "fp16" and self.device_type in ("cuda", "cpu")

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


# Set to 1 or 0 to make cpu_has_native_bf16() answer yes or no whatever the CPU says: the test
# suite runs its precision-dependent tests under both answers on any machine, and a user can keep a
# CPU with native bf16 in fp32 for every command without passing --precision each time.
CPU_BF16_ENV = "GPT2TUI_CPU_BF16"
# The flags of a CPU instruction that computes bf16 (AMX tiles, AVX512-BF16 dot products).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16 in the CPU's flags, unless GPT2TUI_CPU_BF16=1/0 says otherwise."""
    override = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if override in ("1", "yes", "true"):
        return True
    if override in ("0", "no", "false"):
        return False
    if override not in ("", "auto"):
        raise ConfigError(f"{CPU_BF16_ENV} must be 1, 0 or auto, got {os.environ[CPU_BF16_ENV]!r}")
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def choose_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    kind = device.type
    if cfg.precision != "auto":
        if cfg.precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bf16; use --precision fp16 (with loss scaling) or fp32")
        return Precision(cfg.precision, kind, "asked for with --precision")
    if not cfg.mixed_precision:
        return Precision("fp32", kind, "mixed precision off")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", kind, "bf16 autocast (the GPU supports bf16)")
        return Precision("fp16", kind, "fp16 autocast with loss scaling (the GPU has no bf16)")
    if kind == "cpu":
        told = f" ({CPU_BF16_ENV} is set)" if os.environ.get(CPU_BF16_ENV, "").strip().lower() not in ("", "auto") else ""
        if cpu_has_native_bf16():
            return Precision("bf16", kind, f"bf16 autocast (the CPU has native bf16{told})")
        return Precision("fp32", kind, f"fp32: this CPU has no native bf16{told}, where bf16 autocast is ~20x slower")
    return Precision("fp32", kind, f"fp32 on {kind}")


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls and convolutions on Ampere and newer GPUs (free speed, ~fp16 mantissa on fp32 paths)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


# Dense (no sparsity) tensor-core peaks in TFLOPS for bf16/fp16, by a substring of the GPU's name.
# More specific names first: "H100 PCIe" must win over "H100".
_GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.0),
    ("A6000", 155.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def peak_flops(device: torch.device, precision: Precision) -> float | None:
    """The device's peak FLOP/s for this precision, or None where it is not known.

    GPUs: the table above (fp32 counts as TF32, half the bf16 figure, on Ampere+; unknown on
    older GPUs). CPUs: an estimate for every precision (see ``cpu_peak_flops``), so MFU is
    reported under fp32 and bf16 alike, and is None only where the clock cannot be read.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tflops = next((t for key, t in _GPU_PEAK_TFLOPS if key in name), None)
        if tflops is None:
            return None
        if precision.name == "fp32":
            return tflops * 1e12 / 2 if torch.cuda.get_device_capability(device)[0] >= 8 else None
        return tflops * 1e12
    if device.type == "cpu":
        return cpu_peak_flops(precision.name)
    return None


def cpu_flops_per_cycle(precision: str, flags: frozenset[str], capability: str) -> int:
    """FLOPs one core can issue per cycle for matmuls in ``precision`` (an estimate).

    fp32: two FMA units of the widest vectors, 32 FLOPs per cycle for AVX2 and 64 for AVX-512.
    bf16: AMX tiles do 1024 multiply-adds per cycle (2048 FLOPs); AVX512-BF16's dot-product
    instruction does twice the fp32 FMA's work per instruction; without either, bf16 is
    converted and computed on the fp32 units, so the fp32 figure applies. fp16 likewise with
    AMX-FP16 / AVX512-FP16. Measured figures for a machine are in docs/PERFORMANCE.md.
    """
    fp32 = 64 if capability.startswith("AVX512") else 32 if capability == "AVX2" else 8
    half_flags = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}.get(precision)
    if half_flags is None:
        return fp32
    amx, avx512 = half_flags
    if amx in flags:
        return 2048
    if avx512 in flags:
        return 2 * fp32
    return fp32


def cpu_peak_flops(precision: str = "fp32") -> float | None:
    """threads x clock x FLOPs per cycle (``cpu_flops_per_cycle``), from /proc/cpuinfo; None where
    the clock is not listed there."""
    mhz = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":", 1)[1])
                    break
    except (OSError, ValueError):
        return None
    if not mhz:
        return None
    per_cycle = cpu_flops_per_cycle(precision, cpu_flags(), torch.backends.cpu.get_cpu_capability())
    threads = min(torch.get_num_threads(), os.cpu_count() or 1)
    return threads * mhz * 1e6 * per_cycle
