"""rdmm-lightning: RDMM, LDDMM and vSVF diffeomorphic registration for PyTorch Lightning."""

__version__ = "0.1.0"
