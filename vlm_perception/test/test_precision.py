"""precision and runtime options: auto resolution, refusals, and outputs of every path against fp32.

The agreement checks and tolerances are in precision_checks.py (the same on
full-size models: test_precision_full_size.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from backend_probes import frame
from precision_checks import (
    LABELS, assert_same_detections, check_clip_matches_fp32, check_owl_matches_fp32, needs_openvino,
)
from tiny_clip import save_tiny_clip
from tiny_models import save_owl, save_tiny_owl, tiny_config
from vlm_perception.backends import precision as precision_module
from vlm_perception.backends.clip import ClipBackend
from vlm_perception.backends.owl import OwlBackend
from vlm_perception.backends.precision import check_runtime, choose_precision, cpu_flags
from vlm_perception.backends.registry import create_backend
from vlm_perception.core.errors import BackendLoadError

OWL_FAMILIES = ("owlv2", "owlvit")
CLIP_FAMILIES = ("clip", "siglip")


# auto resolution


@pytest.mark.parametrize("requested, device, flags, cuda_bf16, expected", [
    ("auto", "cpu", {"avx2", "avx512f", "amx_tile", "amx_bf16"}, False, "bf16"),  # Sapphire Rapids and later
    ("auto", "cpu", {"avx2", "avx512f", "avx512_bf16"}, False, "bf16"),  # Cooper Lake, Zen 4
    ("auto", "cpu", {"avx2", "fma"}, False, "fp32"),  # no bf16 units: emulated bf16 is slower than fp32
    ("auto", "cpu", set(), False, "fp32"),  # flags unknown (no /proc/cpuinfo)
    ("auto", "cuda", set(), True, "bf16"),  # Ampere and later
    ("auto", "cuda", set(), False, "fp16"),  # older GPUs: fp16 tensor cores
    ("auto", "mps", {"amx_bf16"}, False, "fp32"),
    ("fp32", "cpu", {"amx_bf16"}, False, "fp32"),
    ("bf16", "cpu", {"avx2"}, False, "bf16"),  # explicit values are taken as asked
    ("fp16", "cuda", set(), True, "fp16"),
])
def test_choose_precision(requested: str, device: str, flags: set[str], cuda_bf16: bool, expected: str) -> None:
    assert choose_precision(requested, device, flags, cuda_bf16) == expected


def test_invalid_precision_is_refused_with_the_choices() -> None:
    with pytest.raises(BackendLoadError, match="precision 'fp8' is not one of auto, fp32, bf16, fp16"):
        choose_precision("fp8", "cpu", set(), False)


@pytest.mark.parametrize("runtime, device, message", [
    ("tensorrt", "cpu", "runtime 'tensorrt' is not one of torch, openvino"),
    ("openvino", "cuda", "runtime 'openvino' runs image towers on the CPU but device is 'cuda'"),
])
def test_invalid_runtime_is_refused_with_a_reason(runtime: str, device: str, message: str) -> None:
    with pytest.raises(BackendLoadError, match=message):
        check_runtime(runtime, device)


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("flags, expected", [({"avx2", "fma"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16")])
def test_backend_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, tiny_owl_model_dir: Path,
                                      flags: set[str], expected: str) -> None:
    """On a CPU without bf16 units auto loads fp32 towers; with them, bf16 towers."""
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    backend = create_backend("owlv2", {"model_path": str(tiny_owl_model_dir), "device": "cpu", "precision": "auto"})
    assert backend.precision == expected
    assert backend.model.base_model.vision_model.embeddings.patch_embedding.weight.dtype == {
        "fp32": torch.float32, "bf16": torch.bfloat16}[expected]
    assert backend.model.box_head.dense0.weight.dtype == torch.float32  # heads stay fp32


def test_owl_and_clip_attend_through_sdpa(tiny_owl_model_dir: Path, clip_dirs: dict[str, Path]) -> None:
    """PyTorch's fused attention (flash / memory-efficient kernels on CUDA), asked for explicitly."""
    owl = OwlBackend("owlv2", model_path=str(tiny_owl_model_dir), device="cpu")
    clip = ClipBackend(model_path=str(clip_dirs["clip"]), device="cpu")
    for model in (owl.model, clip.model):
        assert model.config.vision_config._attn_implementation == "sdpa"
        assert model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name, options, message", [
    ("owlv2", {"precision": "half"}, "precision 'half' is not one of auto, fp32, bf16, fp16"),
    ("clip", {"runtime": "onnx"}, "runtime 'onnx' is not one of torch, openvino"),
    ("generative", {"runtime": "openvino"}, "does not apply to the generative backend"),
    ("remote", {"base_url": "http://localhost:1/v1", "model": "m", "precision": "bf16"},
     "do not apply to the remote backend"),
])
def test_backends_refuse_what_they_cannot_do(name: str, options: dict, message: str) -> None:
    with pytest.raises(BackendLoadError, match=message):
        create_backend(name, {"device": "cpu", **options} if name != "remote" else options)


# outputs of each path against fp32

PATHS = [
    pytest.param({"precision": "bf16"}, id="torch-bf16"),
    pytest.param({"precision": "fp16"}, id="torch-fp16"),
    pytest.param({"runtime": "openvino", "precision": "fp32"}, id="openvino-fp32"),
    pytest.param({"runtime": "openvino", "precision": "bf16"}, id="openvino-bf16"),
]


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {family: save_tiny_clip(tmp_path_factory.mktemp(f"tiny-{family}"), family) for family in CLIP_FAMILIES}


@pytest.fixture(scope="module")
def owlvit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_owl(tmp_path_factory.mktemp("tiny-owlvit"), "owlvit")


@pytest.mark.parametrize("options", PATHS)
@pytest.mark.parametrize("family", OWL_FAMILIES)
def test_owl_paths_match_fp32(family: str, options: dict, tiny_owl_model_dir: Path, owlvit_dir: Path) -> None:
    needs_openvino(options)
    model_dir = str(tiny_owl_model_dir if family == "owlv2" else owlvit_dir)
    reference = OwlBackend(family, model_path=model_dir, device="cpu", precision="fp32")
    backend = OwlBackend(family, model_path=model_dir, device="cpu", **options)
    check_owl_matches_fp32(backend, reference, frame(60, 120))


@pytest.mark.parametrize("options", PATHS)
@pytest.mark.parametrize("family", CLIP_FAMILIES)
def test_clip_paths_match_fp32(family: str, options: dict, clip_dirs: dict[str, Path]) -> None:
    needs_openvino(options)
    model_dir = str(clip_dirs[family])
    reference = ClipBackend(model_path=model_dir, device="cpu", precision="fp32")
    backend = ClipBackend(model_path=model_dir, device="cpu", **options)
    check_clip_matches_fp32(backend, reference, frame(60, 120))


# the OpenVINO export cache


def test_openvino_export_is_cached_and_rebuilt_when_the_model_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ov = pytest.importorskip("openvino", reason="pip install -r requirements-openvino.txt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    conversions: list[object] = []
    convert = ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: conversions.append(a) or convert(*a, **k))
    model_dir = save_tiny_owl(tmp_path / "model", "owlv2")

    def load() -> OwlBackend:
        return OwlBackend("owlv2", model_path=str(model_dir), device="cpu", runtime="openvino", precision="fp32")

    first = load()._image_tower
    assert first.exported and len(conversions) == 1
    assert first.path.parent == tmp_path / "cache" / "vlm_perception" / "openvino"
    assert (first.path / "tower.xml").is_file()
    second = load()._image_tower
    assert not second.exported and len(conversions) == 1  # reused, no second export
    assert second.path == first.path

    save_owl(model_dir, "owlv2", tiny_config("owlv2"), seed=1)  # new weights in the same files
    third_backend = load()
    third = third_backend._image_tower
    assert third.exported and len(conversions) == 2 and third.path != first.path
    reference = OwlBackend("owlv2", model_path=str(model_dir), device="cpu", precision="fp32")
    image = frame(60, 120)
    assert_same_detections(third_backend.detect(image, LABELS), reference.detect(image, LABELS))


def test_missing_openvino_fails_configure_with_one_line_saying_what_to_install(
        monkeypatch: pytest.MonkeyPatch, clip_dirs: dict[str, Path]) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(BackendLoadError) as failure:
        create_backend("clip", {"model_path": str(clip_dirs["clip"]), "device": "cpu", "runtime": "openvino"})
    message = str(failure.value)
    assert "\n" not in message
    assert "pip install -r requirements-openvino.txt" in message


# generative: the whole model in the chosen format


def test_generative_runs_in_the_chosen_precision_and_scores_like_fp32(tmp_path: Path) -> None:
    from tiny_generative import save_tiny_llava
    from vlm_perception.backends.generative import GenerativeBackend

    model_dir = str(save_tiny_llava(tmp_path / "llava"))
    reference = GenerativeBackend(model_path=model_dir, device="cpu", precision="fp32", max_new_tokens=2)
    backend = GenerativeBackend(model_path=model_dir, device="cpu", precision="bf16", max_new_tokens=2)
    assert backend.precision == "bf16" and next(backend.model.parameters()).dtype == torch.bfloat16
    image = frame(60, 120)
    for got, expected in zip(backend.detect(image, LABELS), reference.detect(image, LABELS)):
        assert got.label == expected.label
        assert abs(got.score - expected.score) <= 0.05  # bf16 logits of a random model: a coarser bound
    assert isinstance(backend.answer(image, "what is in the bin?"), str)
