"""Shared fixtures: tiny exported models, so runtime tests need no trained model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny untrained LSTM step model (event vocabulary), exported per docs/DESIGN.md."""
    from tests.tiny_models import export_tiny

    return export_tiny("lstm", tmp_path_factory.mktemp("models") / "tiny-lstm")


@pytest.fixture(scope="session")
def tiny_wavenet_dir(tmp_path_factory):
    """A tiny untrained WaveNet step model (dilations 1, 2, 4, 1, 2, 4)."""
    from tests.tiny_models import export_tiny

    return export_tiny("wavenet", tmp_path_factory.mktemp("models") / "tiny-wavenet")
