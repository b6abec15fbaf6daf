"""Schedule callbacks and figure logging."""

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger, Logger

from rdmm_lightning.models import AttributeSchedule, RefinementStepsSchedule, SymmetrySchedule

from .helpers import loader, make_module, trainer


def test_schedules_switch_at_their_epochs(tmp_path):
    torch.manual_seed(0)
    shape = (16, 16)
    module = make_module("svf", shape, log_figures=False)
    seen = []

    class Spy(AttributeSchedule):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append((trainer.current_epoch, pl_module.num_steps, pl_module.symmetry_weight))

    callbacks = [
        SymmetrySchedule(start_epoch=1, weight=5.0),
        RefinementStepsSchedule(start_epoch=2, num_steps=2),
        Spy("bidirectional", {0: False}),
    ]
    tr = trainer(tmp_path, max_epochs=3, callbacks=callbacks, limit_val_batches=0)
    tr.fit(module, loader(shape, n=1, batch_size=1))
    assert seen == [(0, 1, 0.0), (1, 1, 5.0), (2, 2, 5.0)]
    assert float(tr.callback_metrics["schedule/symmetry_weight"]) == 5.0
    assert float(tr.callback_metrics["schedule/num_steps"]) == 2.0
    assert "train/symmetry" in tr.callback_metrics  # the t -> s pass ran once the weight was on


def test_schedule_rejects_unknown_attribute(tmp_path):
    module = make_module("svf", (16, 16))
    tr = trainer(tmp_path, max_epochs=1, callbacks=[AttributeSchedule("epochs_seen", {0: 1})])
    with pytest.raises(ValueError, match="no attribute 'epochs_seen'"):
        tr.fit(module, loader((16, 16), n=1, batch_size=1))
    with pytest.raises(ValueError, match="milestones"):
        AttributeSchedule("num_steps", {})


def _validate(tmp_path, logger, model="rdmm"):
    torch.manual_seed(0)
    module = make_module(model, (16, 16))
    tr = trainer(tmp_path, max_epochs=1, logger=logger, limit_train_batches=1)
    tr.fit(module, loader((16, 16), n=1, batch_size=1), loader((16, 16), n=1, batch_size=1))
    return tr


def test_figure_saved_as_png_with_csv_logger(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    _validate(tmp_path, logger)
    pngs = list((tmp_path / "csv").rglob("figures/val_overview_epoch0000.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000


class _FakeLogger(Logger):
    """Stands in for a logger class by name (the dispatch looks at the class name)."""

    def __init__(self):
        super().__init__()
        self.images = []

    @property
    def name(self):
        return "fake"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class WandbLogger(_FakeLogger):
    def log_image(self, key, images, step=None):
        self.images.append((key, images[0].shape, step))


class TensorBoardLogger(_FakeLogger):
    @property
    def experiment(self):
        return self

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image.shape, dataformats))


@pytest.mark.parametrize("cls", [WandbLogger, TensorBoardLogger])
def test_figure_sent_to_image_loggers(tmp_path, cls):
    logger = cls()
    _validate(tmp_path, logger, model="svf")
    assert len(logger.images) == 1
    tag, shape, _ = logger.images[0]
    assert tag == "val/overview" and len(shape) == 3 and shape[2] == 3
    assert not list(tmp_path.rglob("*.png"))


@pytest.mark.slow
def test_figure_with_real_wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger as RealWandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = RealWandbLogger(project="rdmm-test", save_dir=str(tmp_path), offline=True)
    try:
        _validate(tmp_path, logger, model="svf")
    finally:
        wandb.finish()
    media = list(tmp_path.rglob("media/images/val/overview_*.png"))
    assert len(media) == 1
