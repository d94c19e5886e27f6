"""One exception family, caught at the CLI boundary and printed as one line.

Every message names the thing that is wrong and how to fix it, e.g.
``ModelError("models/x/model.json: vocabulary missing; re-export with `improv export`")``.
"""


class ImprovError(Exception):
    """Base class: a problem the user can fix. The CLI prints str(err) and exits with `exit_code`."""

    exit_code = 1


class ConfigError(ImprovError):
    """A bad option, TOML config or setting (exit code 2, before any port is opened)."""

    exit_code = 2


class ModelError(ImprovError):
    """A missing, corrupt or mismatched model or sidecar (exit code 2, before any port is opened)."""

    exit_code = 2


class DataError(ImprovError):
    """No usable training data, or a data file that cannot be read."""


class MidiPortError(ImprovError):
    """An unknown or ambiguous port, or no usable MIDI system."""
