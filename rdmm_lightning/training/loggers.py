"""Loggers from the ``logger`` config group, and what to tell the user about them at the end.

wandb runs online only with an API key and a reachable server; otherwise (or with
``logger.wandb.offline=true`` / ``WANDB_MODE=offline``) the run is recorded offline in
``<run>/wandb/offline-run-*`` and :func:`finish_loggers` returns the ``wandb sync`` command.
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
from urllib.parse import urlparse

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from pytorch_lightning.loggers import Logger

__all__ = ["build_loggers", "finish_loggers", "wandb_offline_reason"]


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """TCP connect within ``timeout`` s (name lookup included, in a thread)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def wandb_offline_reason(node: DictConfig) -> str | None:
    """Why this wandb logger must run offline, or None to go online."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    if mode == "online":
        return None
    if node.get("offline"):
        return "logger.wandb.offline=true"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    if not _has_api_key(host):
        return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    if not _reachable(host):
        return f"{host} is not reachable"
    return None


def build_loggers(config: DictConfig, rank_zero: bool) -> tuple[list[Logger], list[str]]:
    """Instantiate the configured loggers; returns them and notes to print (rank 0 only).

    Only rank 0 probes the wandb server; other ranks never start a wandb run anyway.
    """
    loggers: list[Logger] = []
    notes: list[str] = []
    for node in (config or {}).values():
        if str(node.get("_target_", "")).endswith("WandbLogger"):
            reason = wandb_offline_reason(node) if rank_zero else "not rank 0"
            if reason is not None:
                node = node.copy()
                with open_dict(node):
                    node.offline = True
                if rank_zero:
                    notes.append(f"wandb: recording offline ({reason})")
        loggers.append(instantiate(node, _convert_="all"))
    return loggers, notes


def finish_loggers(loggers: list[Logger]) -> list[str]:
    """Close wandb runs; for offline ones, where the files are and how to upload them."""
    notes: list[str] = []
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger" or getattr(logger, "_experiment", None) is None:
            continue
        run = logger.experiment
        offline = bool(getattr(run.settings, "_offline", False))
        sync_dir = getattr(run.settings, "sync_dir", None)
        run.finish()
        if offline and sync_dir:
            notes.append(f"wandb: offline run files in {sync_dir}")
            notes.append(f"wandb: upload them with: wandb sync {sync_dir}")
    return notes
