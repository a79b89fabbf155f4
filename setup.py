"""Builds the optional C extensions of the compiled row path: row images decoded
(`cdc.source._rownative`) and documents encoded (`cdc.transform._docnative`).

Everything else is declared in pyproject.toml. `optional=True` lets `pip install` succeed on a
machine without a C compiler: the package then decodes rows with its Python decoder and says
so once in its log (see `cdc.source.rownative`).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cdc.source._rownative",
            sources=["cdc/source/_rownative.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "cdc.transform._docnative",
            sources=["cdc/transform/_docnative.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
