"""A run's TensorBoard event files, read back as TensorBoard reads them (shared by the tests)."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def events(run_dir: Path) -> EventAccumulator:
    """Every event of ``<run_dir>/tensorboard``, scalars and images included."""
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*")), "no event file"
    accumulator = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    return accumulator.Reload()


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar series of a run."""
    accumulator = events(run_dir)
    return {
        tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def series(run_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of a scalar, as TensorBoard shows it (a resumed run's rewritten steps win)."""
    accumulator = events(run_dir)
    if tag not in accumulator.Tags()["scalars"]:
        return {}
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def writer(run_dir: Path) -> str:
    """``<host>.<pid>`` of the one process that wrote a run's event files (named
    ``events.out.tfevents.<time>.<host>.<pid>.<n>``; a run's final hyper-parameters open a
    second file), so that a test sees that two runs did not write into one folder."""
    names = [p.name for p in (run_dir / "tensorboard").glob("events.out.tfevents.*")]
    assert names, "no event file"
    (found,) = {name.split(".", 4)[4].rsplit(".", 1)[0] for name in names}
    return found
