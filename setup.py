"""Builds the C++ extension ``ost_kernels._C``.

Environment variables:
  OST_KERNELS_SKIP_EXTENSION=1  build nothing; the package then runs its pure-PyTorch backend.
  OST_KERNELS_BUILD_CUDA=0      skip the CUDA sources even where CUDA_HOME / nvcc exist.
  OST_KERNELS_CUDA_ARCHS        CUDA architectures, e.g. "80;90" (the default).
"""
import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# torch guesses CUDA_HOME from the nvcc on PATH, which may be a wrapper outside the toolkit
# (then the link fails: cannot find -lcudart); prefer the standard toolkit location. Must be
# set before torch.utils.cpp_extension is imported.
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _sources(pattern: str) -> list[str]:
    # Relative paths: setuptools refuses absolute source paths in editable builds.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_cuda() -> bool:
    if os.environ.get("OST_KERNELS_BUILD_CUDA", "1") == "0":
        return False
    if not _sources("csrc/cuda/*.cu"):
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return False
    if not any(glob.glob(os.path.join(CUDA_HOME, lib, "libcudart.so*")) for lib in ("lib64", "lib")):
        print(f"ost-kernels: {CUDA_HOME} has nvcc but no libcudart: building without the CUDA kernels "
              "(set CUDA_HOME to the CUDA toolkit to build them)")
        return False
    return True


def extensions():
    if os.environ.get("OST_KERNELS_SKIP_EXTENSION", "0") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    # No FP traps or errno: lets the compiler vectorize the selects around divisions and exps.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-DOST_KERNELS_WITH_CPU"]
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])
    if _want_cuda():
        archs = os.environ.get("OST_KERNELS_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
        # --resource-usage: registers, spills and shared memory per kernel in a verbose build's log
        # (`pip install -v`); python -m ost_kernels.cuda_resources tabulates the same report.
        nvcc = ["-O3", "-lineinfo", "--resource-usage"]
        for arch in filter(None, (a.strip() for a in archs)):
            nvcc += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        ext = CUDAExtension(
            "ost_kernels._C",
            sources + _sources("csrc/cuda/*.cu"),
            extra_compile_args={"cxx": cxx + ["-DOST_KERNELS_WITH_CUDA"], "nvcc": nvcc},
            **kwargs,
        )
    else:
        ext = CppExtension("ost_kernels._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
