"""The precision and runtime paths against fp32 on full-size random-weight architectures.

test_precision.py runs these checks (precision_checks.py) on tiny models: two
layers of width 32, where rounding has little depth and width to build up in.
Here the same checks run on CLIP ViT-B/32 and OWLv2-base with random weights,
saved and loaded through the backends. Each model is built once per module;
models and OpenVINO exports live in a temporary directory removed afterwards.

PyTorch bf16 is checked even where the CPU has no bf16 units: there it is
emulated, slow but still has to be right.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import torch
from transformers import CLIPConfig, Owlv2Config

from backend_probes import frame
from precision_checks import LABELS, check_clip_matches_fp32, check_owl_matches_fp32, needs_openvino
from tiny_clip import save_clip
from tiny_models import save_owl
from vlm_perception.backends.clip import DEFAULT_NEGATIVES, DEFAULT_TEMPLATES, ClipBackend
from vlm_perception.backends.owl import OwlBackend
from vlm_perception.backends.precision import resolve_precision

# OWLv2-base takes 960 px (the ensemble checkpoint; bench_precision.py times 768 px).
# Rounding builds up with depth and width, which stay full size; the input side only
# sets the number of patches, and 384 px (576 patches) keeps emulated bf16 affordable on 2 cores.
OWL_SIDE = 384
PATHS = [
    pytest.param({"precision": "bf16"}, id="torch-bf16"),
    pytest.param({"runtime": "openvino", "precision": "fp32"}, id="openvino-fp32"),
    pytest.param({"runtime": "openvino", "precision": "auto"}, id="openvino-auto"),  # bf16 where the CPU has it
]
IMAGE = frame(480, 640)


def text_tower(max_positions: int) -> dict:
    """The text tower CLIP ViT-B/32 and OWLv2-base share: 12 layers of width 512."""
    return {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": max_positions}


def vit_base(image_size: int, patch_size: int) -> dict:
    """ViT-B: 12 layers of width 768."""
    return {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "image_size": image_size, "patch_size": patch_size}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Models and OpenVINO exports (about 2 GB), removed after the module."""
    with tempfile.TemporaryDirectory(prefix="vlm-perception-full-size-") as directory, \
            pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(Path(directory) / "cache"))
        yield Path(directory)


@pytest.fixture(scope="module")
def clip_dir(workdir: Path) -> Path:
    """openai/clip-vit-base-patch32's architecture."""
    config = CLIPConfig(text_config=text_tower(77), vision_config=vit_base(224, 32), projection_dim=512)
    # Words the backend's prompts use, one token each as in the real vocabulary: realistic prompt lengths.
    words = re.findall(r"[a-z]+", " ".join([*LABELS, *DEFAULT_TEMPLATES, *DEFAULT_NEGATIVES]).lower())
    return save_clip(workdir / "clip", "clip", config, words=words)


@pytest.fixture(scope="module")
def owl_dir(workdir: Path) -> Path:
    """google/owlv2-base-patch16-ensemble's architecture at OWL_SIDE px."""
    config = Owlv2Config(text_config=text_tower(16), vision_config=vit_base(OWL_SIDE, 16), projection_dim=512)
    return save_owl(workdir / "owlv2", "owlv2", config)


@pytest.fixture(scope="module")
def clip_reference(clip_dir: Path) -> ClipBackend:
    return ClipBackend(model_path=str(clip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def owl_reference(owl_dir: Path) -> OwlBackend:
    return OwlBackend("owlv2", model_path=str(owl_dir), device="cpu", precision="fp32")


def skip_unless_distinct(options: dict) -> None:
    """openvino-auto is openvino-fp32 again where auto resolves to fp32 (a CPU without bf16 units)."""
    if options.get("precision") == "auto" and resolve_precision("auto", torch.device("cpu")) == "fp32":
        pytest.skip("precision auto is fp32 on this CPU (no bf16 units): openvino-fp32 covers it")


@pytest.mark.parametrize("options", PATHS)
def test_full_size_clip_paths_match_fp32(options: dict, clip_dir: Path, clip_reference: ClipBackend) -> None:
    needs_openvino(options)
    skip_unless_distinct(options)
    backend = ClipBackend(model_path=str(clip_dir), device="cpu", **options)
    agreement = check_clip_matches_fp32(backend, clip_reference, IMAGE)
    print(f"CLIP ViT-B/32 {backend.runtime} {backend.image_tower_precision}: {agreement}")


@pytest.mark.parametrize("options", PATHS)
def test_full_size_owl_paths_match_fp32(options: dict, owl_dir: Path, owl_reference: OwlBackend) -> None:
    needs_openvino(options)
    skip_unless_distinct(options)
    backend = OwlBackend("owlv2", model_path=str(owl_dir), device="cpu", **options)
    agreement = check_owl_matches_fp32(backend, owl_reference, IMAGE)
    print(f"OWLv2-base {OWL_SIDE} px {backend.runtime} {backend.image_tower_precision}: {agreement}")
