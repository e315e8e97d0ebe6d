"""The backend switch (``gnnaccel.use_backend``) and what each op entry point runs under it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import gnnaccel
from gnnaccel import backend
from gnnaccel.ops import aggregate

from conftest import REPO_ROOT


def test_default_nesting_and_restore():
    assert gnnaccel.current_backend() == "auto"
    with gnnaccel.use_backend("torch") as name:
        assert name == "torch" and gnnaccel.current_backend() == "torch"
        with gnnaccel.use_backend("cpp"):
            assert gnnaccel.current_backend() == "cpp"
        assert gnnaccel.current_backend() == "torch"
        with pytest.raises(KeyError):
            with gnnaccel.use_backend("cpp"):
                raise KeyError("inside")
        assert gnnaccel.current_backend() == "torch"
    assert gnnaccel.current_backend() == "auto"


@pytest.mark.parametrize("bad", ["cuda", "TRITON", "", None, 3])
def test_unknown_backend_is_rejected(bad):
    with pytest.raises(ValueError, match="backend must be one of"):
        with gnnaccel.use_backend(bad):
            pass
    with pytest.raises(ValueError, match="backend must be one of"):
        gnnaccel.set_default_backend(bad)
    assert gnnaccel.current_backend() == "auto"


def test_selection_is_thread_local_over_a_process_default():
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def other():
        seen["before"] = gnnaccel.current_backend()
        entered.set()
        release.wait(10)
        seen["after_default"] = gnnaccel.current_backend()

    with gnnaccel.use_backend("torch"):
        t = threading.Thread(target=other)
        t.start()
        entered.wait(10)
        try:
            gnnaccel.set_default_backend("cpp")
        finally:
            release.set()
            t.join(10)
        assert gnnaccel.current_backend() == "torch"  # this thread's block wins over the default
    try:
        assert seen == {"before": "auto", "after_default": "cpp"}
        assert gnnaccel.current_backend() == "cpp"
    finally:
        gnnaccel.set_default_backend("auto")


def test_kernel_backend_per_device(monkeypatch):
    assert backend.kernel_backend(torch.device("cpu")) == "cpp"
    assert backend.kernel_backend("cuda") == ("triton" if backend.triton_available() else "cpp")
    with gnnaccel.use_backend("torch"):
        assert backend.kernel_backend("cpu") == "torch" and backend.kernel_backend("cuda") == "torch"
    with gnnaccel.use_backend("cpp"):
        assert backend.kernel_backend("cuda") == "cpp"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with gnnaccel.use_backend("triton"):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            backend.kernel_backend("cpu")
        g = gnnaccel.Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
        with pytest.raises(RuntimeError, match="interpreter"):  # an op entry point says so too
            aggregate(g.rowptr, g.col, torch.ones(2, 3))


def test_layers_follow_the_switch(generator):
    """A layer's output is the same whichever backend computes it (CPU: cpp and torch)."""
    n = 40
    g = gnnaccel.Graph.from_edge_index(torch.randint(n, (2, 200), generator=generator), n)
    x = torch.randn(n, 12, generator=generator)
    conv = gnnaccel.nn.SAGEConv(12, 7)
    with torch.no_grad():
        outs = {}
        for name in ("cpp", "torch"):
            with gnnaccel.use_backend(name):
                outs[name] = conv(x, g)
    torch.testing.assert_close(outs["torch"], outs["cpp"], rtol=1e-5, atol=1e-5)


_BROKEN_TRITON = {
    "raises ImportError": "raise ImportError('simulated: libtriton.so: cannot open shared object file')\n",
    "raises RuntimeError": "raise RuntimeError('simulated: triton was built for another CUDA')\n",
    "missing submodules": "",  # `import triton` works, `import triton.language` does not
}


@pytest.mark.parametrize("kind", list(_BROKEN_TRITON))
def test_broken_triton_falls_back_with_one_warning(kind, tmp_path):
    """In a fresh process whose `triton` is broken: gnnaccel imports, CUDA tensors fall back to the compiled
    kernels with exactly one warning however often they ask, and an explicit "triton" says why it cannot."""
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text(_BROKEN_TRITON[kind])
    script = textwrap.dedent("""
        import sys, warnings
        sys.path.insert(0, sys.argv[1])
        import torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import gnnaccel
            import gnnaccel.kernels
            from gnnaccel import backend
            choices = [backend.kernel_backend(torch.device("cuda")) for _ in range(5)]
            g = gnnaccel.Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2)
            out = gnnaccel.ops.aggregate(g.rowptr, g.col, torch.ones(2, 3), "sum")
        assert choices == ["cpp"] * 5, choices
        assert out.sum().item() == 6.0
        triton_warnings = [w for w in caught if "triton is unavailable" in str(w.message)]
        assert len(triton_warnings) == 1, [str(w.message) for w in caught]
        with gnnaccel.use_backend("triton"):
            try:
                backend.kernel_backend(torch.device("cuda"))
            except RuntimeError as exc:
                assert "triton is unavailable" in str(exc), exc
            else:
                raise AssertionError("no error for an explicit triton backend without triton")
        print("OK")
    """)
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
