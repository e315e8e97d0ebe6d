"""Build gnnaccel._C with ninja: CPU (OpenMP) kernels always, CUDA kernels when possible.

Environment:
  USE_CUDA=0          never build CUDA kernels
  FORCE_CUDA=1        build CUDA kernels even when no GPU is visible (needs nvcc and a CUDA build of torch)
  MAX_JOBS            parallel compile jobs (read by torch's BuildExtension)
  TORCH_CUDA_ARCH_LIST  CUDA architectures (read by torch's BuildExtension)
  GNNACCEL_NATIVE=0   do not tune the CPU code for this machine (-march=native); use for portable wheels
  GNNACCEL_SKIP_EXT=1 declare no extension (the Makefile builds it in place first, so that the editable
                      install does not compile everything a second time in a temporary directory)
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.getenv("USE_CUDA", "1") == "0":
        return False
    has_toolkit = CUDA_HOME is not None and torch.version.cuda is not None
    if os.getenv("FORCE_CUDA", "0") == "1":
        if not has_toolkit:
            raise RuntimeError(
                "FORCE_CUDA=1 but no CUDA toolkit or no CUDA build of torch "
                f"(CUDA_HOME={CUDA_HOME}, torch.version.cuda={torch.version.cuda})")
        return True
    return has_toolkit and torch.cuda.is_available()


def _extension():
    cpp_sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-DGNNACCEL_WITH_OPENMP"]
    if os.getenv("GNNACCEL_NATIVE", "1") != "0":
        cxx_flags.append("-march=native")
    link_flags = ["-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if _want_cuda():
        cuda_sources = sorted(glob.glob("csrc/**/*.cu", recursive=True))
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-DGNNACCEL_WITH_CUDA"]
        extra_inc = os.getenv("GNNACCEL_CUDA_INCLUDE")  # e.g. site-packages/nvidia/cu13/include
        if extra_inc:
            include_dirs += extra_inc.split(os.pathsep)
        return CUDAExtension(
            "gnnaccel._C", cpp_sources + cuda_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags + ["-DGNNACCEL_WITH_CUDA"], "nvcc": nvcc_flags},
            extra_link_args=link_flags)
    return CppExtension("gnnaccel._C", cpp_sources, include_dirs=include_dirs,
                        extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)


setup(
    name="gnnaccel",
    version="0.1.0",
    description="Fast inference of trained graph neural networks: channel pruning and feature caching",
    # gnnaccel/kernels is a symlink to the top-level kernels/ (the layout keeps that folder): an ordinary
    # subpackage, found and copied like any other.
    packages=find_packages(include=["gnnaccel", "gnnaccel.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "scipy", "tqdm"],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "hypothesis", "scikit-learn", "torch-geometric", "matplotlib"],
        "triton": ["triton"],
    },
    ext_modules=[] if os.getenv("GNNACCEL_SKIP_EXT") == "1" else [_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["gnnaccel=gnnaccel.cli:main"]},
    zip_safe=False,
)
