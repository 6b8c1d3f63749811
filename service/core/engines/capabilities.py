"""Which reduced-precision kernels this CPU runs natively, read from /proc/cpuinfo's flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# INT8 convolutions are fastest with VNNI (one instruction per 4 multiply-adds), and still beat fp32 with
# AVX2's multiply-add sequences: on a 2-core AMD EPYC with AVX2 and no VNNI, batch 1, the INT8 file ran
# 46-58 images/s on OpenVINO against 29-33 for fp32, and 58.5 against 28.1 on onnxruntime (BENCHMARKS.md).
# Without AVX2 (SSE only) the INT8 kernels have nothing to gain on.
INT8_FLAGS = frozenset({"avx2", "avx512_vnni", "avx_vnni", "amx_int8"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class CpuCapabilities:
    int8: bool = False
    bf16: bool = False
    flags: frozenset[str] = frozenset()

    def describe(self) -> str:
        native = [name for name, ok in (("int8", self.int8), ("bf16", self.bf16)) if ok]
        found = sorted(self.flags & (INT8_FLAGS | BF16_FLAGS))
        return f"native {'/'.join(['fp32', *native])} ({', '.join(found) or 'no AVX2/VNNI/BF16/AMX flags'})"


def from_flags(flags: set[str] | frozenset[str]) -> CpuCapabilities:
    flags = frozenset(flags)
    return CpuCapabilities(int8=bool(flags & INT8_FLAGS), bf16=bool(flags & BF16_FLAGS), flags=flags)


def detect(cpuinfo: Path = CPUINFO) -> CpuCapabilities:
    """The flags of the first processor listed; none (fp32 only) where the file is absent (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return CpuCapabilities()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return from_flags(set(value.split()))
    return CpuCapabilities()
