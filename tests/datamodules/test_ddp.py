"""Two DDP ranks (ddp_spawn on CPU) read disjoint shares that together cover each epoch."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

from datamodules import PairDataModule

from .helpers import make_pool


class ShardRecorder(pl.LightningModule):
    """Writes the pairs each rank trains on to ``out/rank<r>.json``."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[list[str]]] = {}

    def training_step(self, batch, batch_idx):
        pairs = [list(p) for p in zip(batch["source_path"], batch["target_path"])]
        self.seen.setdefault(self.current_epoch, []).extend(pairs)
        return (self.weight * batch["source"].mean()).sum()

    def on_train_end(self) -> None:
        with open(f"{self.out}/rank{self.global_rank}.json", "w") as f:
            json.dump(self.seen, f)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.ddp
@pytest.mark.slow
def test_two_ranks_get_disjoint_shards_covering_the_epoch(tmp_path):
    pool = make_pool(tmp_path, subjects=4, per_subject=2, shape=(8, 8, 8), labels=False)
    dm = PairDataModule(pool=str(pool), pairs_per_epoch=11, batch_size=2, seed=7)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=True,  # our samplers are kept either way
    )
    trainer.fit(ShardRecorder(str(tmp_path)), datamodule=dm)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    reference = PairDataModule(pool=str(pool), pairs_per_epoch=11, seed=7)
    for epoch in ("0", "1"):
        shards = []
        for rank in range(2):
            loader = reference.train_dataloader(rank=rank, world_size=2)
            table = reference.train_set.table
            keys = loader.sampler.epoch_keys(int(epoch))
            expected = [[table.path(s), table.path(t)] for _, _, s, t in keys]
            assert seen[rank][epoch] == expected
            shards.append({k[1] for k in keys})
        assert len(seen[0][epoch]) == len(seen[1][epoch]) == 6  # 11 padded to 12
        assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(12))
    assert seen[0]["0"] != seen[0]["1"]
