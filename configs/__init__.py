"""Hydra/OmegaConf configuration groups (installed as ``rdmm_lightning.configs``; data only)."""
