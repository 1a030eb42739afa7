"""`mrcnn train`: compose the config, build data, model and trainer, fit.

The function :func:`train` is the whole job and returns the final metrics, so sweeps (Hydra
multirun) and notebooks can call it as well as the command line.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mrcnn.argv import prepare_command_line
from mrcnn.builders import build_datamodule, build_module, build_trainer, plain
from mrcnn.callbacks import CocoMetrics, stops_reported, validated_step
from mrcnn.config import CONFIG_DIR
from mrcnn.data.preflight import check_image_files
from mrcnn.distributed import is_launched_rank_zero, lightning_starts_the_ranks
from mrcnn.errors import ConfigError
from mrcnn.evaluation.calibration import store_in_checkpoint
from mrcnn.loggers import finishing_runs, log_hyperparams
from mrcnn.resume import (
    check_run_folder_is_free,
    requeued_checkpoint,
    resolve_ckpt_path,
    resume_overrides,
)
from mrcnn.task import command

log = logging.getLogger(__name__)


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


def _checkpoint_dirs(cfg: DictConfig, output_dir: Path) -> list[Path]:
    """Where this run's checkpoints go: ``<run dir>/checkpoints`` and any configured ``dirpath``."""
    callbacks = (cfg.get("callbacks") or {}).values()
    return [output_dir / "checkpoints", *(Path(c.dirpath) for c in callbacks if c.get("dirpath"))]


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Train as configured and return the final logged metrics (``trainer.callback_metrics``).

    ``overrides`` are the command-line overrides behind ``cfg``; checkpoints keep them, so that
    resuming from one rebuilds the same config (see :func:`main`). Under DDP every process runs
    this; only rank zero writes files (config, logs, checkpoints, TensorBoard).

    A run told to stop (SIGUSR1, SIGTERM) raises :class:`~mrcnn.preemption.RunStopped` once its
    step is saved; a run that fails leaves its last completed step too (see
    :class:`~mrcnn.callbacks.ModelCheckpoint`).
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir) or requeued_checkpoint(
        output_dir
    )
    if is_launched_rank_zero():  # the other processes start once rank zero has checked
        check_run_folder_is_free(output_dir, _checkpoint_dirs(cfg, output_dir), ckpt_path)
    # mrcnn's data module does resume mid-epoch (it skips the batches done); Lightning cannot
    # see that and would warn that the epoch restarts.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

    datamodule = build_datamodule(cfg)
    check_image_files(datamodule.train_source, "training")
    check_image_files(datamodule.val_source, "validation")
    module = build_module(cfg, datamodule.categories)
    trainer = build_trainer(cfg, datamodule, overrides, module)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    if ckpt_path is not None:
        log.info("Resuming from %s.", ckpt_path)
    with finishing_runs(trainer.loggers), stops_reported(trainer):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if validated_step(trainer) != trainer.global_step and trainer.limit_val_batches:
            # The returned metrics (and a sweep's objective) must describe the final weights.
            log.info("Validating the final weights (step %d).", trainer.global_step)
            trainer.validate(module, datamodule=datamodule, verbose=False)
            store_final_calibration(trainer)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        # This run's settings and results (TensorBoard's HPARAMS tab, MLflow params, W&B config).
        log_hyperparams(trainer.loggers, plain(cfg), _final_metrics(metrics))
    for checkpoint in trainer.checkpoint_callbacks:
        saved = checkpoint.best_model_path or checkpoint.last_model_path
        if saved:
            log.info("Checkpoint: %s", saved)
    log.info("Outputs in %s", output_dir)
    return metrics


def store_final_calibration(trainer: L.Trainer) -> None:
    """The thresholds fitted on the final weights, into ``last.ckpt`` (saved before that last
    validation, with the previous validation's thresholds)."""
    fitted = [c.calibration for c in trainer.callbacks if isinstance(c, CocoMetrics)]
    if not fitted or fitted[0] is None or not trainer.is_global_zero:
        return
    for checkpoint in trainer.checkpoint_callbacks:
        path = getattr(checkpoint, "last_model_path", "")
        if path and Path(path).is_file():
            store_in_checkpoint(path, fitted[0])


def _optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """``optimized_metric`` of this run, for sweepers (Optuna maximises it), with one log line."""
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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@command("mrcnn train")
def main(cfg: DictConfig) -> float | None:
    """``mrcnn train``. Under DDP, Lightning starts this script again for every other
    rank, in the same run folder (``hydra.run.dir``); those processes write no log file.

    With ``ckpt_path``, the overrides the interrupted run was started with come back from the
    checkpoint (this command's own overrides win), so ``python -m mrcnn.train ckpt_path=last
    hydra.run.dir=<run dir>`` continues the same training.
    """
    hydra_cfg = HydraConfig.get()
    if not is_launched_rank_zero():
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
    ddp = cfg.trainer.get("strategy") == "ddp"
    if hydra_cfg.mode == RunMode.MULTIRUN and ddp and lightning_starts_the_ranks():
        raise ConfigError(
            "trainer=ddp inside a Hydra multirun (-m) is not supported on a plain machine: "
            "Lightning would start every other rank as a whole sweep. Run one job per command "
            "(e.g. a shell loop), each with its own hydra.run.dir, or sweep on SLURM "
            "(hydra/launcher=slurm), where srun starts every rank."
        )
    overrides = list(hydra_cfg.overrides.task)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if ckpt_path is not None:
        resumed = resume_overrides(ckpt_path, overrides)
        if resumed != overrides:
            log.info("Resuming with the overrides of the run that wrote %s: %s", ckpt_path, resumed)
            cfg = hydra.compose(config_name="train", overrides=resumed)
            overrides = resumed
    metrics = train(cfg, overrides)
    return _optimized_metric(cfg, metrics)


def cli() -> None:
    """``mrcnn train``, ``mrcnn-train`` and ``python -m mrcnn.train``."""
    prepare_command_line("train")
    main()


if __name__ == "__main__":
    cli()
