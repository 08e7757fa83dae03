"""The appliance files as tests read them: the repository, env files, compose interpolation."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads an env file (no quotes used in ours)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        values[key.strip()] = value.strip()
    return values


def compose_variables(text: str) -> dict[str, str | None]:
    """Every ${VAR...} a compose file interpolates, with its default (None: no default)."""
    found: dict[str, str | None] = {}
    for m in _VAR.finditer(text):
        default = m["arg"] if m["op"] in (":-", "-") else None
        found.setdefault(m["name"], default)
    return found


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of one string (the operators our files use)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        have = env.get(name)
        if op == ":-":
            return have if have else arg
        if op == "-":
            return have if have is not None else arg
        return have or ""

    return _VAR.sub(sub, value)


def tracked_tree(dest: Path) -> Path:
    """Copy what a clean clone of the working tree holds (tracked + new, not ignored) to dest."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest
