"""Where ORT's uint8 x int8 kernels can saturate (x86, AVX2, no VNNI) PTQ uses 7-bit weights."""

from __future__ import annotations

import platform

import pytest

from torchslim.quant import PtqOptions
from torchslim.quant.cpu_features import cpu_flags, u8s8_can_saturate

CPUINFO = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n"


def test_flags_are_read_off_cpuinfo():
    assert cpu_flags(CPUINFO) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags("processor\t: 0\n") == set()


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 rule")
def test_only_avx2_without_vnni_can_saturate():
    assert u8s8_can_saturate({"avx2", "fma"})
    assert not u8s8_can_saturate({"avx2", "avx512_vnni"})
    assert not u8s8_can_saturate({"avx2", "avx_vnni"})
    assert not u8s8_can_saturate({"sse2"})


def test_explicit_choices_win_over_the_cpu(monkeypatch):
    monkeypatch.setattr("torchslim.quant.ptq.u8s8_can_saturate", lambda: True)
    assert PtqOptions().weights_reduced()
    assert not PtqOptions(activation_type="int8").weights_reduced()  # S8S8 kernels do not saturate
    assert not PtqOptions(reduce_range=False).weights_reduced()
    monkeypatch.setattr("torchslim.quant.ptq.u8s8_can_saturate", lambda: False)
    assert not PtqOptions().weights_reduced() and PtqOptions(reduce_range=True).weights_reduced()
