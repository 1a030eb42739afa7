"""The docs stay true: every command README.md and docs/*.md show composes, the worked example of
docs/configs.md trains, and every link points somewhere.

Which commands, and how they are checked (docs/architecture.md, "Docs that stay true"):

- Read: every line of a fenced ```bash block, and every inline code span outside fenced blocks,
  in README.md and docs/*.md. Lines ending in ``\\`` are joined with the next; ``# comments`` are
  dropped; ``&&``, ``;`` and ``|`` separate commands on a line; leading ``VAR=value`` words are the
  command's environment.
- A command is ``mrcnn [<command> | --help | --version] ...``, ``mrcnn-<command> ...`` or
  ``python -m <mrcnn module> ...`` (``mrcnn``, ``mrcnn.train``, ``mrcnn.evaluate``,
  ``mrcnn.predict``, ``mrcnn.export``, ``mrcnn.data.check``). ``mrcnn`` followed by a lower-case
  word that is no command, or ``python -m mrcnn.<unknown>``, fails. A line with a word that is a
  placeholder in angle or square brackets, or an ellipsis (``mrcnn <command> --help``,
  ``mrcnn check <overrides>``, ``mrcnn train [key=value ...]``, ``mrcnn train ...``), is a usage
  pattern, not a command, and is not read; a bracket inside a value (``model=runs/<run>/x.ckpt``)
  is read, and fails as it would in the shell. ``mrcnn train: error: ...`` is a message, not a
  command.
- Checked: ``mrcnn``, ``mrcnn --help`` and ``mrcnn --version`` run as they are, and so does a
  command line that already asks Hydra for ``--help``, ``--hydra-help``, ``--cfg`` or ``--info``.
  Every other command line is composed with ``--cfg job`` appended: it must exit 0, and must not
  use an old spelling (mrcnn.argv.RENAMED). A multirun line (``-m``: Hydra refuses ``-m`` with
  ``--cfg``) is composed without ``-m``, with the first value of each grid (``a=1,2``,
  ``choice(...)``, ``range(...)``) and the lower end of each Optuna ``interval(...)``: the first
  job's config. ``--cfg job`` reads no file, so placeholders (FILE, DIR, RUN_DIR, ...) may stand
  for paths; they must be plain words (Hydra's override grammar, like the shell, rejects ``<``).
- Skipped, with the reason: a line that needs an extra that does not import here
  (mrcnn.argv.missing_extras: ``hparams_search=optuna``, the submitit launchers). No other
  command is exempt (UNCHECKED is empty; add a line there, with the reason, only when a command
  cannot be composed at all).
- Identical command lines are checked once (the first place that shows them names the test).

The commands run in ONE child process (``python -m tests.test_docs``, this checkout first on the
path, in a scratch folder holding a copy of docs/examples/my_configs as configs.md tells the
reader to make), each as ``python -m mrcnn <args>`` runs it: ``mrcnn.cli.main(args)``, its output
captured, SystemExit caught. A process per command would spend 4-6 s importing torch and
Lightning each time; composing takes about 0.1 s. The worked example of configs.md runs as its
own ``python -m mrcnn train`` process (test_configs_example_trains_...).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mrcnn import argv as mrcnn_argv
from mrcnn.cli import COMMANDS
from tests.tiny import PROJECT_ROOT, TINY_DATA, TINY_RUN, run_module

DOC_FILES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
EXAMPLE_CONFIGS = PROJECT_ROOT / "docs" / "examples" / "my_configs"

# How a command line starts, and the mrcnn command it runs.
MODULES = {
    "mrcnn.train": "train",
    "mrcnn.evaluate": "evaluate",
    "mrcnn.predict": "predict",
    "mrcnn.export": "export",
    "mrcnn.data.check": "check",
}
SCRIPTS = {f"mrcnn-{name}": name for name in COMMANDS}
TOP_LEVEL = {"--help", "-h", "help", "--version", "-V"}
# Hydra options that make a command line show something instead of running: run as they are.
SHOWS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i"}
# Hydra options followed by a value (not an override).
HYDRA_VALUE_OPTIONS = {
    "--config-dir",
    "-cd",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--experimental-rerun",
}
MULTIRUN = {"-m", "--multirun"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
# Command lines the docs may show that this test cannot compose: {command line: reason}.
UNCHECKED: dict[str, str] = {}


@dataclass
class DocCommand:
    """A command line the docs show, and what this test runs for it."""

    where: str  # file:line of its first appearance
    shown: str  # the command as the docs show it (continuations joined)
    args: list[str] = field(default_factory=list)  # mrcnn's arguments, as `mrcnn <args>`
    env: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # not a command mrcnn has: the test fails with this
    skip: str | None = None

    @property
    def key(self) -> str:
        return json.dumps([self.env, self.args, self.problem])


def _code_spans(text: str) -> list[tuple[int, str]]:
    """Inline code spans of a paragraph (CommonMark: a run of n backticks up to the next run of
    exactly n), with the offset each starts at."""
    pattern = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
    return [(m.start(), " ".join(m.group(2).split())) for m in pattern.finditer(text)]


def shown_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every bash line and inline code span of a Markdown file."""
    found: list[tuple[int, str]] = []
    lines = path.read_text().splitlines()
    fence: str | None = None
    paragraph: list[tuple[int, str]] = []

    def flush() -> None:
        text = "\n".join(line for _, line in paragraph)
        for start, span in _code_spans(text):
            found.append((paragraph[0][0] + text.count("\n", 0, start), span))
        paragraph.clear()

    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        stripped = line.strip()
        if stripped.startswith("```"):
            if fence is None:
                flush()
                fence = stripped[3:].strip()
            else:
                fence = None
            continue
        if fence is None:
            if stripped:
                paragraph.append((number, line))
            else:
                flush()
        elif fence == "bash":
            first = number
            while line.rstrip().endswith("\\") and number < len(lines):
                line = line.rstrip()[:-1] + " " + lines[number].strip()
                number += 1
            found.append((first, line.strip()))
    flush()
    return found


def split_commands(line: str) -> list[list[str]]:
    """The words of each command on a shell line (comments dropped); [] when it does not parse
    as shell words (prose in a code span)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&;|")
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return []
    commands: list[list[str]] = [[]]
    for word in words:
        if word in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def as_mrcnn_command(where: str, shown: str, words: list[str]) -> DocCommand | None:
    """The mrcnn command in ``words`` (see module doc), or None when they are none."""
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _, value = words[0].partition("=")
        env[name] = value
        words = words[1:]
    if not words or any(word.startswith(("<", "[")) or word == "..." for word in words):
        return None  # not a command, or a usage pattern (see module doc)
    command = DocCommand(where, shown, env=env)
    if words[0] == "mrcnn":
        args = words[1:]
    elif words[0] in SCRIPTS:
        args = [SCRIPTS[words[0]], *words[1:]]
    elif (
        words[0] in ("python", "python3")
        and len(words) > 2
        and words[1] == "-m"
        and re.fullmatch(r"mrcnn(\.[a-z_]+)*", words[2])
    ):
        module = words[2]
        if module == "mrcnn":
            args = words[3:]
        elif module in MODULES:
            args = [MODULES[module], *words[3:]]
        else:
            command.problem = f"python -m {module}: no such mrcnn command module"
            return command
    else:
        return None
    if args and args[0].endswith(":"):
        return None  # a message, `mrcnn train: error: ...`
    if args and args[0] not in COMMANDS and args[0] not in TOP_LEVEL:
        command.problem = f"mrcnn {args[0]}: no such command ({', '.join(COMMANDS)})"
        return command
    command.args = checked_args(args)
    missing = mrcnn_argv.missing_extras(args[1:])
    if missing:
        arg, plugin = missing[0]
        command.skip = f"{arg} needs an extra that does not import here ({plugin})"
    if shown in UNCHECKED:
        command.skip = UNCHECKED[shown]
    return command


def first_job(override: str) -> str:
    """A sweep override (``a=1,2``, ``choice``, ``range``, ``interval``) as its first job's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    if parsed.value_type == ValueType.INTERVAL_SWEEP:
        value = str(parsed.value().start)
    else:
        value = next(parsed.sweep_string_iterator())
    return f"{parsed.get_key_element()}={value}"


def checked_args(args: list[str]) -> list[str]:
    """What this test runs for ``mrcnn <args>`` (see module doc)."""
    if not args or args[0] in TOP_LEVEL:
        return args
    name, rest = args[0], args[1:]
    if any(arg.split("=")[0] in SHOWS for arg in rest):
        return args
    multirun = any(arg in MULTIRUN for arg in rest)
    checked, value_of_option = [], False
    for arg in rest:
        if arg in MULTIRUN:
            continue
        if value_of_option or arg.startswith("-"):
            checked.append(arg)
        else:
            checked.append(first_job(arg) if multirun else arg)
        value_of_option = arg in HYDRA_VALUE_OPTIONS
    return [name, *checked, "--cfg", "job"]


def doc_commands() -> list[DocCommand]:
    """Every command the docs show, once each (the first place that shows it)."""
    commands: dict[str, DocCommand] = {}
    for path in DOC_FILES:
        where = path.relative_to(PROJECT_ROOT)
        for number, line in shown_lines(path):
            for words in split_commands(line):
                command = as_mrcnn_command(f"{where}:{number}", line, words)
                if command is not None:
                    commands.setdefault(command.key, command)
    return list(commands.values())


DOC_COMMANDS = doc_commands()


def _run_in_child(checks: Path, results: Path) -> None:
    """The child process (``python -m tests.test_docs CHECKS RESULTS``): run every check as
    ``python -m mrcnn <args>`` would, and write each one's exit status and output."""
    from hydra.core.global_hydra import GlobalHydra

    from mrcnn.cli import main

    # cli.main runs the command's module as __main__ (runpy); the second time a module runs,
    # runpy warns that it is already imported, which only a process running several commands sees.
    warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
    done = []
    for check in json.loads(checks.read_text()):
        out, err, code = io.StringIO(), io.StringIO(), 0
        environment, saved_argv = dict(os.environ), list(sys.argv)
        os.environ.update(check["env"])
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(check["args"])
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
                except Exception:
                    traceback.print_exc()
                    code = 1
        finally:
            os.environ.clear()
            os.environ.update(environment)
            sys.argv = saved_argv
            GlobalHydra.instance().clear()
        done.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    results.write_text(json.dumps(done))


@pytest.fixture(scope="module")
def doc_results(tmp_path_factory) -> dict[str, dict]:
    """Every checkable doc command run once, in one child process: {key: result}."""
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(EXAMPLE_CONFIGS, folder / "my_configs")
    runnable = [c for c in DOC_COMMANDS if c.problem is None and c.skip is None]
    checks, results = folder / "checks.json", folder / "results.json"
    checks.write_text(json.dumps([{"args": c.args, "env": c.env} for c in runnable]))
    run_module("tests.test_docs", str(checks), str(results), cwd=folder, timeout=600)
    return {c.key: r for c, r in zip(runnable, json.loads(results.read_text()), strict=True)}


@pytest.mark.parametrize(
    "command",
    DOC_COMMANDS,
    ids=[f"{c.where} {' '.join(c.args) or c.shown}"[:90] for c in DOC_COMMANDS],
)
def test_doc_command_composes(command: DocCommand, doc_results):
    assert command.problem is None, f"{command.where}: {command.shown}\n{command.problem}"
    if command.skip:
        pytest.skip(command.skip)
    result = doc_results[command.key]
    shown = f"{command.where}: {command.shown}\nran: mrcnn {' '.join(command.args)}"
    output = result["stdout"][-2000:] + result["stderr"][-3000:]
    assert result["code"] == 0, f"{shown}\n{output}"
    assert "is now" not in result["stderr"], f"{shown}\nuses an old spelling:\n{output}"
    if command.args[-2:] == ["--cfg", "job"]:
        assert result["stdout"].strip(), f"{shown}\nprinted no config"


def test_docs_show_the_commands():
    """The reader above finds what the docs show (a broken reader would check nothing)."""
    shown = {" ".join(c.args) for c in DOC_COMMANDS}
    assert "train --cfg job" in shown  # README: pip install ... && mrcnn train
    assert "--version" in shown
    assert any(c.args[:1] == ["check"] for c in DOC_COMMANDS)
    assert any("--config-dir" in c.args for c in DOC_COMMANDS)
    # a multirun line, composed as its first job
    assert "train backbone=resnet50 optimizer.lr=0.01 --cfg job" in shown
    assert len(DOC_COMMANDS) >= 60


def test_configs_page_shows_the_example_files_as_they_are():
    page = (PROJECT_ROOT / "docs" / "configs.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    files = sorted(EXAMPLE_CONFIGS.rglob("*.yaml"))
    assert files
    for path in files:
        assert path.read_text() in blocks, f"docs/configs.md does not show {path} as it is"


def test_configs_example_trains_two_steps_from_outside_the_repository(tmp_path):
    """docs/configs.md's worked example, run as it says: its folder copied into a project of
    one's own, a COCO data set under paths.data_dir, offline (backbone.weights=null), 2 steps."""
    from omegaconf import OmegaConf

    from tests.data.tmp_data import small_coco

    project = tmp_path / "my_project"
    assert PROJECT_ROOT not in project.resolve().parents
    shutil.copytree(EXAMPLE_CONFIGS, project / "my_configs")
    _, annotations = small_coco(project / "data" / "my_coco")  # images/ and 2 images' json
    for split in ("train", "val"):
        shutil.copy(annotations, project / "data" / "my_coco" / f"{split}.json")
    # tests/tiny.py's overrides, less the synthetic set's own (data.train.num_images, ...).
    tiny = [o for o in TINY_DATA if not o.startswith(("data.train.", "data.val."))]
    run_module(
        "mrcnn",
        "train",
        "--config-dir",
        "my_configs",
        "experiment=my_run",
        "paths.data_dir=data",
        "backbone.weights=null",
        *tiny,
        *TINY_RUN,
        cwd=project,
    )
    (run_dir,) = (project / "outputs" / "my_run").glob("????-??-??/??-??-??")
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.task_name == "my_run"
    assert (saved.backbone.name, saved.optimizer._target_) == ("resnet50", "torch.optim.SGD")
    assert saved.data.augment == "multiscale" and saved.evaluation.score_threshold == 0.3
    assert saved.data.train.annotations == "data/my_coco/train.json"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def _prose(path: Path) -> str:
    """A Markdown file without its fenced blocks (a `# comment` there is no heading)."""
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", _prose(path), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_doc_links_point_to_files_and_headings_that_exist(path: Path):
    text = _prose(path)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{path.name}:\n" + "\n".join(broken)


if __name__ == "__main__":
    _run_in_child(Path(sys.argv[1]), Path(sys.argv[2]))
