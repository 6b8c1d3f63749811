"""Which reduced-precision kernels this CPU runs natively, read from /proc/cpuinfo's flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# INT8 convolutions are fast only with VNNI (one instruction per 4 multiply-adds); without it onnxruntime's
# and OpenVINO's INT8 kernels fall back to AVX2/AVX-512 sequences that are no faster than fp32.
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class CpuCapabilities:
    int8: bool = False
    bf16: bool = False
    flags: frozenset[str] = frozenset()

    def describe(self) -> str:
        native = [name for name, ok in (("int8", self.int8), ("bf16", self.bf16)) if ok]
        found = sorted(self.flags & (INT8_FLAGS | BF16_FLAGS))
        return f"native {'/'.join(['fp32', *native])} ({', '.join(found) or 'no VNNI/BF16/AMX flags'})"


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
