"""The packaged configs (mrcnn/conf, found through the package, never the checkout): every group
option composes, and the settings train, evaluate and predict share are spelled the same way."""

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

import mrcnn
from mrcnn.config import CONFIG_DIR, compose_config

GROUPS = [
    "backbone",
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "evaluation",
]


def test_the_configs_live_inside_the_package():
    assert CONFIG_DIR.parent.samefile(mrcnn.__path__[0])
    for entry in ("train", "evaluate", "predict", "export", "check"):
        assert (CONFIG_DIR / f"{entry}.yaml").is_file()


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, p.stem) for group in GROUPS for p in sorted((CONFIG_DIR / group).glob("*.yaml"))],
)
def test_every_config_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    # Every interpolation resolves (values a user must fill in, ???, may stay missing).
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.paths.output_dir == str(tmp_path.resolve())


def test_unknown_backbone_names_the_choices(tmp_path):
    with pytest.raises(MissingConfigException, match=r"(?s)Could not find.*resnet101.*resnet50"):
        compose_config(["backbone=resnet19"], output_dir=tmp_path)


def test_train_evaluate_and_predict_share_the_evaluation_keys():
    """A key copied from one command's command line works in the others: the same group."""
    shared = OmegaConf.load(CONFIG_DIR / "evaluation" / "default.yaml")
    override = "evaluation.max_detections=300"
    for name in ("train", "evaluate", "predict"):
        cfg = compose_config([override], config_name=name)
        for key, value in shared.items():
            expected = 300 if key == "max_detections" else value
            assert cfg.evaluation[key] == expected, (name, key)
    for name in ("evaluate", "predict", "export"):  # the model file: model=FILE everywhere
        assert "model_path" in compose_config(config_name=name)
        assert "ckpt_path" not in compose_config(config_name=name)


def test_tuned_settings_specialise_only_their_data_and_optimizer_pair():
    tuned = OmegaConf.load(CONFIG_DIR / "tuned" / "synthetic_adamw.yaml")
    tuned_sgd = OmegaConf.load(CONFIG_DIR / "tuned" / "synthetic_sgd.yaml")
    sgd = OmegaConf.load(CONFIG_DIR / "optimizer" / "sgd.yaml")
    adamw = OmegaConf.load(CONFIG_DIR / "optimizer" / "adamw.yaml")
    assert tuned.optimizer.lr != adamw.lr  # otherwise this test proves nothing
    assert compose_config().optimizer.lr == tuned.optimizer.lr  # the default run
    assert compose_config(["trainer=cpu"]).trainer.max_steps == tuned.trainer.max_steps
    assert compose_config(["optimizer=sgd"]).optimizer.lr == tuned_sgd.optimizer.lr
    assert compose_config(["data=coco128"]).optimizer.lr == adamw.lr
    assert compose_config(["data=coco128", "optimizer=sgd"]).optimizer.lr == sgd.lr
    assert compose_config(["optimizer.lr=0.005"]).optimizer.lr == 0.005  # the command line wins
