"""What a run prints: the training bar counts the epochs the run will really train (not ``max_epochs - 1``
of an endless stream), and known-harmless library lines are dropped in one place."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from panns_lightning.training.progress import RichStepProgressBar, TQDMStepProgressBar, planned_epochs


class EpochLabels(L.Callback):
    """Records the bar's description at the start of each training epoch (after the bar set it)."""

    def __init__(self, bar: L.Callback) -> None:
        self.bar, self.labels = bar, []

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if isinstance(self.bar, RichStepProgressBar):
            self.labels.append(self.bar._get_train_description(trainer.current_epoch).strip())
        else:
            self.labels.append(self.bar.train_progress_bar.desc.rstrip(": "))


@pytest.mark.parametrize("bar_class", [TQDMStepProgressBar, RichStepProgressBar])
def test_an_endless_stream_cut_by_max_steps_shows_its_real_epoch_count(bar_class: type, tmp_path) -> None:
    if bar_class is RichStepProgressBar:
        pytest.importorskip("rich")
    bar = bar_class()
    labels = EpochLabels(bar)
    trainer = L.Trainer(
        max_epochs=-1,
        max_steps=5,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[bar, labels],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    assert planned_epochs(trainer) == 3
    assert sorted(set(labels.labels)) == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]


def test_known_harmless_library_messages_are_dropped_and_others_kept() -> None:
    import logging
    import re
    import warnings

    from panns_lightning.cli.library_noise import WARNINGS, silence_known_harmless

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_harmless()  # its filters go in front of "always"
        for known in WARNINGS:
            warnings.warn(re.sub(r"\\(.)", r"\1", known.pattern) + " (more text)", UserWarning, stacklevel=1)
        warnings.warn("something a user must see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something a user must see"]

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        logger.warning("💡 Tip: For seamless cloud logging, install this")
        logger.warning("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
    assert records == ["GPU available: False, used: False"]
