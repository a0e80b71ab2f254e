"""Build of valarfast's compiled kernels (placeholder until the kernels land; see issue 2)."""

from setuptools import setup

setup()
