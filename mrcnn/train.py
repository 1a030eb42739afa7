"""`python -m mrcnn.train`: compose the config, build data, model and trainer, fit.

The function :func:`train` is the whole job and returns the final metrics, so sweeps (Hydra
multirun) and notebooks can call it as well as the command line.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, OmegaConf

from mrcnn.callbacks import RunState, saved_overrides, stdout_is_terminal
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
        lr_reference_batch=cfg.get("lr_reference_batch"),
    )


def build_trainer(cfg: DictConfig, overrides: Sequence[str] = ()) -> L.Trainer:
    """The Lightning Trainer; ``overrides`` (the command line) go into every checkpoint."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks.append(RunState(overrides))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"))
    # A progress bar written to a file or a pipe is a wall of carriage returns: there the
    # ProgressLog callback's lines take its place.
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True)) and stdout_is_terminal()
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        enable_progress_bar=progress_bar,
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


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume: a file, or ``last`` for ``<output_dir>/checkpoints/last.ckpt``."""
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: there is no {path}. Name the run to resume with "
                "hydra.run.dir=<its folder> (the one holding checkpoints/last.ckpt), or give "
                "ckpt_path=/path/to/file.ckpt."
            )
        return path
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such checkpoint file. Runs write theirs to "
            "<run dir>/checkpoints/ (last.ckpt, best-*.ckpt)."
        )
    return path


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Train as configured and return the final logged metrics (``trainer.callback_metrics``).

    ``overrides`` are the command-line overrides behind ``cfg``; checkpoints keep them, so that
    resuming from one rebuilds the same config (see :func:`main`). Under DDP every process runs
    this; only rank zero writes files (config, logs, checkpoints, TensorBoard).
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    # mrcnn's data module does resume mid-epoch (it skips the batches done); Lightning cannot
    # see that and would warn that the epoch restarts.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

    datamodule: DetectionDataModule = instantiate(cfg.data)
    categories = datamodule.categories
    log.info(
        "Data: %d categories %s -> num_classes=%d.",
        len(categories.names),
        list(categories.names),
        categories.num_classes,
    )
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg, overrides)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    if ckpt_path is not None:
        log.info("Resuming from %s.", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if module.last_validated_step != trainer.global_step and trainer.limit_val_batches:
        # The returned metrics (and a sweep's objective) must describe the final weights.
        log.info("Validating the final weights (step %d).", trainer.global_step)
        trainer.validate(module, datamodule=datamodule, verbose=False)

    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    for logger in trainer.loggers:  # TensorBoard's HPARAMS tab: this run's settings and results
        logger.log_hyperparams(plain(cfg), metrics=_final_metrics(metrics))
    for checkpoint in trainer.checkpoint_callbacks:
        saved = checkpoint.best_model_path or checkpoint.last_model_path
        if saved:
            log.info("Checkpoint: %s", saved)
    log.info("Outputs in %s", output_dir)
    return metrics


def _is_launched_rank_zero() -> bool:
    """False in a process a DDP launcher started for a rank above zero (from the variables
    Lightning's launcher, torchrun and SLURM set), known before the Trainer exists."""
    names = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(name) or 0) == 0 for name in names)


def lightning_starts_the_ranks() -> bool:
    """Whether Lightning would start the other DDP processes itself, by running this command
    again (a plain machine). Under SLURM (srun, e.g. Hydra's submitit launcher) or torchrun the
    cluster starts every rank, and a Hydra multirun job is one rank among them."""
    return not (SLURMEnvironment.detect() or TorchElasticEnvironment.detect())


def _resume_overrides(ckpt_path: Path, overrides: list[str]) -> list[str]:
    """The checkpoint's run overrides, then this command's (which win for the same key)."""
    parser = OverridesParser.create()
    given = {o.key_or_group for o in parser.parse_overrides(overrides)}
    earlier = saved_overrides(ckpt_path)
    kept = [
        o
        for o, p in zip(earlier, parser.parse_overrides(earlier), strict=True)
        if p.key_or_group not in given
    ]
    return [*kept, *overrides]


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """``python -m mrcnn.train``. Under DDP, Lightning starts this script again for every other
    rank, in the same run folder (``hydra.run.dir``); those processes write no log file.

    With ``ckpt_path``, the overrides the interrupted run was started with come back from the
    checkpoint (this command's own overrides win), so ``python -m mrcnn.train ckpt_path=last
    hydra.run.dir=<run dir>`` continues the same training.
    """
    hydra_cfg = HydraConfig.get()
    if not _is_launched_rank_zero():
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
    ddp = cfg.trainer.get("strategy") == "ddp"
    if hydra_cfg.mode == RunMode.MULTIRUN and ddp and lightning_starts_the_ranks():
        raise ValueError(
            "trainer=ddp inside a Hydra multirun (-m) is not supported on a plain machine: "
            "Lightning would start every other rank as a whole sweep. Run one job per command "
            "(e.g. a shell loop), each with its own hydra.run.dir, or sweep on SLURM "
            "(hydra/launcher=slurm), where srun starts every rank."
        )
    overrides = list(hydra_cfg.overrides.task)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if ckpt_path is not None:
        resumed = _resume_overrides(ckpt_path, overrides)
        if resumed != overrides:
            log.info("Resuming with the overrides of the run that wrote %s: %s", ckpt_path, resumed)
            cfg = hydra.compose(config_name="train", overrides=resumed)
            overrides = resumed
    metrics = train(cfg, overrides)
    return _optimized_metric(cfg, metrics)


if __name__ == "__main__":
    main()
