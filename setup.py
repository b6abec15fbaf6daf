"""Package list for setuptools (everything else is in pyproject.toml).

``configs/`` stays at the top of the repository but installs as ``rdmm_lightning.configs``
(package-dir mapping in pyproject.toml); automatic discovery cannot express that, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["rdmm_lightning", "rdmm_lightning.*", "datamodules*"])
    + ["rdmm_lightning.configs"]
)
