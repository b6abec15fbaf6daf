"""A step whose networks' outputs are not finite on one DDP rank only (gloo, two processes):
both ranks drop the same update and end with the same weights."""

from datetime import timedelta

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from rdmm_lightning.models import RegistrationNetModule
from rdmm_lightning.shooting import NonFiniteInputError

from .helpers import SMALL, loader

STEPS = 3


class OverflowsOnRankOne(RegistrationNetModule):
    """The networks' outputs are 'not finite' on rank 1's second training batch."""

    def _step(self, batch, stage, batch_idx):
        if stage == "train" and self.global_rank == 1 and batch_idx == 1:
            raise NonFiniteInputError("the momentum is not finite")
        return super()._step(batch, stage, batch_idx)


class RanksAgree(pl.Callback):
    """At the end of training on every rank: the same weights, steps and skipped updates."""

    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        weights = trainer.strategy.all_gather(flat)
        counts = trainer.strategy.all_gather(
            torch.tensor([float(module.skipped_steps), float(module.global_step)])
        )
        assert torch.equal(weights[0], weights[1]), "the ranks' weights differ"
        assert counts.tolist() == [[1.0, STEPS], [1.0, STEPS]], counts.tolist()
        assert bool(torch.isfinite(flat).all())


@pytest.mark.ddp
@pytest.mark.slow
def test_an_overflow_on_one_rank_skips_the_update_on_both(tmp_path):
    torch.manual_seed(0)
    module = OverflowsOnRankOne(
        "svf", image_shape=(16, 16), **{**SMALL, "similarity": "ssd"}, log_figures=False
    )
    # a bounded collective timeout: a rank that skips the all-reduce fails the test, not hangs it
    strategy = DDPStrategy(
        start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120)
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=STEPS,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[RanksAgree()],
    )
    trainer.fit(module, loader((16, 16), n=2 * STEPS, batch_size=1))
