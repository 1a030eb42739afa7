"""`python -m mrcnn.train`: compose the config, build data, model and trainer, fit.

The function :func:`train` is the whole job and returns the final metrics, so sweeps (Hydra
multirun) and notebooks can call it as well as the command line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mrcnn.data import DetectionDataModule
from mrcnn.model.module import MaskRCNNModule
from mrcnn.precision import resolve_precision

log = logging.getLogger(__name__)


def plain(node: Any) -> Any:
    """A resolved config node as plain dicts and lists (what checkpoints can store safely)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_module(cfg: DictConfig, datamodule: DetectionDataModule) -> MaskRCNNModule:
    """The LightningModule for this config; num_classes comes from the data's categories."""
    return MaskRCNNModule(
        categories=datamodule.categories.to_dict(),
        backbone=plain(cfg.backbone),
        detector=plain(cfg.model.detector),
        loss_weights=plain(cfg.model.loss_weights),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
        on_nonfinite_loss=cfg.on_nonfinite_loss,
        evaluation=plain(cfg.get("evaluation")),
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"))
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=precision
    )


def _final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The run's last validation metrics as ``final/...`` (TensorBoard's HPARAMS tab).

    Renamed because the logger writes them as scalars at step 0: under their own names they
    would add a false first point to the ``val/...`` curves.
    """
    return {
        name.replace("val/", "final/", 1): value
        for name, value in metrics.items()
        if name.startswith("val/")
    }


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as configured and return the final logged metrics (``trainer.callback_metrics``)."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)

    datamodule: DetectionDataModule = instantiate(cfg.data)
    categories = datamodule.categories
    log.info(
        "Data: %d categories %s -> num_classes=%d.",
        len(categories.names),
        list(categories.names),
        categories.num_classes,
    )
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if module.last_validated_step != trainer.global_step and trainer.limit_val_batches:
        # The returned metrics (and a sweep's objective) must describe the final weights.
        log.info("Validating the final weights (step %d).", trainer.global_step)
        trainer.validate(module, datamodule=datamodule, verbose=False)

    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    for logger in trainer.loggers:  # TensorBoard's HPARAMS tab: this run's settings and results
        logger.log_hyperparams(plain(cfg), metrics=_final_metrics(metrics))
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        log.info(
            "Checkpoints in %s (best: %s).", checkpoint.dirpath, checkpoint.best_model_path or "-"
        )
    log.info("Outputs in %s", output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The CLI; returns ``optimized_metric`` for sweepers (Optuna maximises it)."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        log.warning(
            "optimized_metric=%s was not logged (validation off?); a sweeper gets None. Logged: %s",
            name,
            sorted(metrics),
        )
        return None
    log.info("Returning %s=%s (optimized_metric).", name, metrics[name])
    return metrics[name]


if __name__ == "__main__":
    main()
