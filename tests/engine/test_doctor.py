"""`moebox doctor`'s findings: what is missing, in plain words, with what to do."""

from __future__ import annotations

from types import SimpleNamespace

from engine.tools import doctor
from engine.tools.synth import write_synthetic_gguf

AVX512_AMX = {
    "avx2": True,
    "avx512f": True,
    "amx_tile": True,
    "amx_permitted": True,
}


def test_amx_refused_by_the_os(monkeypatch):
    monkeypatch.setattr(doctor, "cpu_features", lambda: dict(AVX512_AMX, amx_permitted=False))
    found = " ".join(doctor.findings())
    assert "AMX" in found and "5.16" in found


def test_no_avx2(monkeypatch):
    monkeypatch.setattr(doctor, "cpu_features", lambda: dict(AVX512_AMX, avx2=False))
    assert any("no AVX2" in line for line in doctor.findings())


def test_gpu_present_but_cpu_torch(monkeypatch):
    import torch

    monkeypatch.setattr(doctor, "cpu_features", lambda: AVX512_AMX)
    monkeypatch.setattr(doctor, "_nvidia_driver", lambda: "580.65")
    monkeypatch.setattr(torch.version, "cuda", None)
    found = " ".join(doctor.findings())
    assert "CPU build" in found and "580.65" in found


def test_model_that_does_not_fit_in_ram(tmp_path, monkeypatch):
    path = write_synthetic_gguf(tmp_path / "m.gguf", "tiny-qwen3moe", qtype="Q8_0")
    assert doctor.findings(path) == doctor.findings()  # this machine holds a tiny model
    monkeypatch.setattr(doctor.psutil, "virtual_memory", lambda: SimpleNamespace(total=2**30))
    found = " ".join(doctor.findings(path))
    assert "routed experts" in found and "read from disk" in found
