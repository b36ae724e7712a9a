"""`makini-pipeline init [DIR]`: writes `.dlt/config.toml` and `.dlt/secrets.toml` into a
project, from the templates shipped with the package (every key documented, placeholders for
the secrets). Existing files are kept unless `force` is given."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from makini_source.exceptions import ConfigurationError

TEMPLATES = ("config.toml", "secrets.toml")


def template(name: str) -> str:
    """The text of a shipped template (`config.toml` or `secrets.toml`)."""
    return resources.files("makini_source").joinpath("templates", name).read_text()


def scaffold(directory: str | Path, force: bool = False) -> list[Path]:
    """Writes the templates into `<directory>/.dlt/`.

    Returns:
        The files written.

    Raises:
        ConfigurationError: A file exists and `force` is False (nothing is written then).
    """
    settings_dir = Path(directory) / ".dlt"
    targets = [settings_dir / name for name in TEMPLATES]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise ConfigurationError(
            f"{' and '.join(existing)} already exist(s); pass --force to overwrite "
            f"(the templates are also in {resources.files('makini_source') / 'templates'})"
        )
    settings_dir.mkdir(parents=True, exist_ok=True)
    for path in targets:
        path.write_text(template(path.name))
    return targets
