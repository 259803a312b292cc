"""Where a run happened: for the provenance of trained weights and for benchmark records.

fp32 results depend on the CPU kernels torch dispatches to (AVX2 vs AVX-512, oneDNN, MKL), so
besides the CPU model the record names torch's CPU capability and any environment variable
that caps those kernels: two runs agree bit for bit only where these agree.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

#: Environment variables that change which CPU kernels torch, oneDNN and MKL use.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def describe_hardware(device: torch.device) -> dict[str, Any]:
    """CPU / GPU, thread count, torch build and kernel selection of this process."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    kernel_env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    if kernel_env:
        info["kernel_env"] = kernel_env
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
