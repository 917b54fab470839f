"""Shared fixtures: tiny random OWL model directories, built once per test session, offline."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub; set before transformers reads it.
os.environ["HF_HUB_OFFLINE"] = "1"
# Caches the tests fill (the offline backend's class embeddings) stay out of the user's home.
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="vlm-perception-test-cache-"))

# launch_tests/ holds launch_testing files; they need the `launch_test` runner, which
# test_launch_tests.py starts for each of them. Collected by plain pytest they would fail.
collect_ignore = ["launch_tests"]


@pytest.fixture(scope="session")
def tiny_owl_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OWLv2 model directory for `model_path`."""
    from tiny_models import save_tiny_owl  # torch: imported only where used (the Kilted leg has none)

    return save_tiny_owl(tmp_path_factory.mktemp("tiny-owlv2"), "owlv2")


@pytest.fixture(scope="session")
def tiny_owlvit_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OWL-ViT model directory for `model_path`."""
    from tiny_models import save_tiny_owl

    return save_tiny_owl(tmp_path_factory.mktemp("tiny-owlvit"), "owlvit")


@pytest.fixture(scope="session")
def ros():
    """rclpy initialised for the session's test clients (integration tests).

    An anchor node lives for the whole session: destroying the process's last
    node while another process leaves the graph can deadlock Fast DDS 2.14.
    """
    import rclpy

    rclpy.init()
    anchor = rclpy.create_node(f"test_session_anchor_{os.getpid()}")
    yield
    anchor.destroy_node()
    rclpy.shutdown()
