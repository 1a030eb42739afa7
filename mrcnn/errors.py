"""User errors: what every mrcnn command reports as one message, without a traceback.

A :class:`UserError` is a problem the user can fix (a missing or unreadable file, malformed
annotations, a bad config value, a non-finite loss, classes that do not match), and its message
says which file, annotation or config key, and the fix. Library code raises them; the commands
turn them into one line on stderr and :data:`EXIT_USER_ERROR` (:func:`mrcnn.task.command`).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from omegaconf.errors import MissingMandatoryValue

# The exit status of every command for a user error: Hydra's own config errors (an unknown
# group option, a malformed override) exit with 1 too, so one status covers every such mistake.
EXIT_USER_ERROR = 1


class UserError(Exception):
    """A problem in the user's input or config; the message names it and says the fix."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key and the values that do."""


def find_user_error(error: BaseException) -> BaseException | None:
    """The user error behind ``error``, if any, following ``raise ... from`` and the exceptions
    other libraries wrap around it (Hydra's ``InstantiationException``, Lightning's re-raise).

    A missing file (``FileNotFoundError``) and a required config value left unset (``???``)
    count as user errors too.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError | FileNotFoundError | MissingMandatoryValue):
            return current
        # ``raise ... from None`` hides the context: it is not what went wrong.
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return None


def user_message(error: BaseException) -> str:
    """The text shown for a user error: its own message, with the fix for an unset value, and
    its notes (what a failed run left to resume from).

    A user error raised in a data loader worker comes back from torch as the same type whose
    message is "Caught X in DataLoader worker process N. Original Traceback ... X: <message>":
    the user sees the ``<message>`` alone, as in the main process."""
    notes = [str(note) for note in getattr(error, "__notes__", [])]
    return " ".join([_own_message(error), *notes])


def _own_message(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a required value"
        return f"The config key {key} has no value (???): set it on the command line, {key}=..."
    text = str(error)
    if text.startswith("Caught ") and " in DataLoader worker process " in text:
        kind = type(error)
        marker = f"\n{kind.__module__}.{kind.__qualname__}: "
        if marker not in text:  # torch names the type as the traceback printed it
            marker = f"\n{kind.__qualname__}: "
        if marker in text:
            return text[text.rindex(marker) + len(marker) :].strip()
    return text
