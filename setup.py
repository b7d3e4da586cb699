"""The one compiled part of pvae: the native CPU kernels (pvae/native: the Poisson sampler and serving's packing).

Everything else is declared in pyproject.toml. The extension is optional: without a C compiler the
install still succeeds, and serving samples with the bundle's ONNX sampler graph and packs with numpy
instead (same results, slower; ``pvae-serve`` logs which it uses). It is a plain C library loaded with ctypes, not a
CPython module, so it does not depend on Python's headers or ABI.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pvae.native._native",
            sources=["pvae/native/poisson.c", "pvae/native/pack.c"],
            # No fused multiply-add: the counts must match the reference's float64 rounding bit for bit.
            # -fno-trapping-math / -fno-math-errno only let the screen's selects and floor vectorise.
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-pthread"],
            extra_link_args=["-pthread"],
            libraries=["m"],
            optional=True,
        )
    ]
)
