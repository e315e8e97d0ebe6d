"""Packaging (issue 13, item 10): the wheel pins the torch it was built against, the build records that torch,
and gnnaccel refuses to load _C under another torch (one warning, ExtensionNotBuiltError on use, no crash)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO_ROOT


def _setup_module():
    """setup.py imported as a module: its helpers, without running setup()."""
    spec = importlib.util.spec_from_file_location("gnnaccel_setup", REPO_ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_requirement_is_the_building_release():
    setup = _setup_module()
    assert setup.torch_requirement("2.11.0+cu130") == "torch==2.11.0"
    assert setup.torch_requirement("2.13.0") == "torch==2.13.0"
    assert setup.torch_requirement() == f"torch=={torch.__version__.split('+')[0]}"
    namespace = {}
    exec(setup.build_info_source("2.11.0+cu130", "13.0"), namespace)  # a literal-only module
    assert namespace["TORCH_VERSION"] == "2.11.0+cu130" and namespace["CUDA_VERSION"] == "13.0"


def test_wheel_metadata_pins_torch(tmp_path):
    """The requirement setup.py really declares (egg_info writes the metadata a wheel gets; nothing compiled)."""
    env = dict(os.environ, GNNACCEL_SKIP_EXT="1")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    requires = (tmp_path / "gnnaccel.egg-info" / "requires.txt").read_text().split("[", 1)[0].split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requires
    assert not any(r.startswith("torch>") for r in requires)


_IMPORT_WITH_RECORDED = textwrap.dedent('''
    import sys, types, warnings
    recorded = sys.argv[1]
    info = types.ModuleType("gnnaccel._build_info")
    info.TORCH_VERSION, info.CUDA_VERSION = recorded, None
    sys.modules["gnnaccel._build_info"] = info  # what a build against `recorded` would have written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import gnnaccel
    import torch
    ours = [str(w.message) for w in caught if "gnnaccel._C" in str(w.message)]
    print("LOADED", gnnaccel.EXTENSION_LOADED, "_C_IMPORTED", "gnnaccel._C" in sys.modules, "WARNINGS", len(ours))
    for msg in ours:
        print("WARNING", msg)
    from gnnaccel import ExtensionNotBuiltError
    x = torch.randn(3, 4)
    for name, call in [("pruned_linear", lambda: gnnaccel.ops.pruned_linear(x, torch.randn(4, 2))),
                       ("aggregate", lambda: gnnaccel.ops.aggregate(torch.tensor([0, 1, 2, 3]),
                                                                    torch.tensor([1, 2, 0]), x))]:
        try:
            call()
            print("RAN", name)
        except ExtensionNotBuiltError as exc:
            print("REFUSED", name, exc)
''')


def _import_with_recorded(version: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _IMPORT_WITH_RECORDED, version], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr  # no crash, no import error
    return proc.stdout


def test_build_for_another_torch_is_refused_before_loading():
    out = _import_with_recorded("1.13.1+cu117")
    assert "LOADED False _C_IMPORTED False WARNINGS 1" in out
    assert f"built against torch 1.13.1+cu117 but torch {torch.__version__} is running" in out
    assert "REFUSED pruned_linear" in out and "REFUSED aggregate" in out
    assert "install torch==1.13.1" in out


@pytest.mark.skipif(not __import__("gnnaccel").EXTENSION_LOADED, reason="needs the built extension")
def test_build_for_this_torch_release_loads():
    other_label = torch.__version__.split("+")[0] + "+cu130"  # same release, another local label
    out = _import_with_recorded(other_label)
    assert "LOADED True _C_IMPORTED True WARNINGS 0" in out
    assert "RAN pruned_linear" in out and "RAN aggregate" in out
