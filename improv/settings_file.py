"""One setting written into a TOML settings file, keeping everything else it holds (comments too):
what `improv calibrate --write` does. `tomllib` only reads, so the file is edited as lines."""

from __future__ import annotations

import re
from pathlib import Path

from improv.errors import ConfigError
from improv.settings import load_settings

def write_setting(toml_path: str | Path, section: str, key: str, value: float) -> None:
    """Set ``[section] key = value`` in a TOML file, keeping all else it holds, comments too: the
    key's line is edited in place (its comment kept), or added at the end of its table, or the
    table is appended; a new file gets just that. A file that does not load is left untouched."""
    path = Path(toml_path)
    text = path.read_text() if path.exists() else ""
    if text:
        load_settings(path)  # ConfigError: report a broken file, never rewrite it
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    setting = f"{key} = {float(value)!r}"
    heads = [(i, m.group(1).strip()) for i, line in enumerate(lines) if (m := _TABLE_RE.match(line))]
    start = next((i for i, name in heads if name == section), None)
    if start is None:
        lines += [*(["\n"] if lines else []), f"[{section}]\n", f"{setting}\n"]
    else:
        end = next((i for i, _ in heads if i > start), len(lines))
        hit = next((i for i in range(start + 1, end) if re.match(rf"\s*{key}\s*=", lines[i])), None)
        if hit is not None:
            comment = re.search(r"\s+#.*$", lines[hit].rstrip("\n"))
            lines[hit] = f"{setting}{comment.group(0) if comment else ''}\n"
        else:
            last = max((i for i in range(start, end) if lines[i].strip()), default=start)
            lines.insert(last + 1, f"{setting}\n")
    path.write_text("".join(lines))
    if getattr(getattr(load_settings(path), section), key) != float(value):
        raise ConfigError(f"{path}: could not set {section}.{key} in it; set {key} = {value} under [{section}] by hand")


_TABLE_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
