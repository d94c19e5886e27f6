"""The live path and `improv generate` run on onnxruntime alone: torch is never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import improv
    skipped = []
    for info in pkgutil.walk_packages(improv.__path__, "improv."):
        importlib.import_module(info.name)
    from typer.testing import CliRunner
    from improv.cli import app
    result = CliRunner().invoke(app, ["generate", "--model", sys.argv[1], "--out", sys.argv[2], "--beats", "4", "--seed", "1"])
    assert result.exit_code == 0, result.output
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "music21", "matplotlib", "training"))
    print("HEAVY", heavy)
    """
)


def test_runtime_and_generate_never_import_torch(tiny_model_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_model_dir), str(tmp_path / "g.mid")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout
    assert (tmp_path / "g.mid").stat().st_size > 0
