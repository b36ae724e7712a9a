"""The built wheel, installed into a fresh virtual environment, works outside the repository:
`makini-pipeline init` in an empty directory, the demo, a load configured in that directory's
`.dlt/`, the same tables as a load from the repository, and the orchestration modules.

The fresh environment gets only the wheel; its dependencies come from the test environment's
site-packages through a `.pth` file (as `--system-site-packages` would), so nothing is
downloaded. The wheel's own copy of `makini_source` comes first on its path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import Sandbox, run_captured
from test_works_anywhere import columns

from makini_source.cli import main

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "*.duckdb*", ".pytest_cache"
)


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = run_captured(command, cwd, env, timeout=300)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout; returns its bin directory."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=IGNORED)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w"]
    if importlib.util.find_spec("setuptools"):  # else pip builds in isolation (local index)
        build.insert(5, "--no-build-isolation")
    run([*build, str(root / "dist")], root, env)
    (wheel,) = (root / "dist").glob("makini_source-*.whl")

    environment = root / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        + ["--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        root,
        env,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    ours = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    ours += [*site.getsitepackages(), site.getusersitepackages()]
    existing = [path for path in dict.fromkeys(ours) if Path(path).is_dir()]
    Path(purelib, "_test_dependencies.pth").write_text("\n".join(existing) + "\n")
    return environment / "bin"


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No configuration or code of this checkout: only what the project directory holds."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SOURCES__", "DESTINATION__", "MAKINI__")) and k != "PYTHONPATH"
    }
    env["DLT_DATA_DIR"] = str(tmp_path / "dlt-home")
    return env


@pytest.mark.timeout(600)
def test_wheel_inits_a_project_runs_the_demo_and_loads_like_the_repository(
    installed: Path, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = clean_env(tmp_path)
    cli = str(installed / "makini-pipeline")

    run([cli, "init"], project, env)
    assert {p.name for p in (project / ".dlt").iterdir()} == {"config.toml", "secrets.toml"}

    demo = run([cli, "--demo", "--demo-purchase-orders", "10", "--no-progress"], project, env)
    assert "Spend by month" in demo.stdout and (project / "makini_demo.duckdb").exists()

    # a load configured the way the templates say: the project's own .dlt/
    secrets = project / ".dlt" / "secrets.toml"
    secrets.write_text(
        secrets.read_text().replace(
            "[sources.makini.connections]\n",
            "[sources.makini.connections]\n"
            + "".join(f'{name} = "{token}"\n' for name, token in sandbox.tokens.items()),
        )
    )
    config = project / ".dlt" / "config.toml"
    config.write_text(
        config.read_text().replace(
            '# base_url = "https://api.makini.io"', f'base_url = "{sandbox.url}"'
        )
    )
    loaded = run([cli, "--no-progress"], project, env)
    assert "acme" in loaded.stdout and (project / "makini.duckdb").exists()

    # the same tables as a load from the repository
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(sandbox.tokens))
    repository = ["--no-progress", "--pipeline-name", "from_repo"]
    repository += [
        "--pipelines-dir",
        str(tmp_path / "p"),
        "--duckdb-path",
        str(tmp_path / "r.duckdb"),
    ]
    assert main(repository) == 0
    wheel_columns, repo_columns = columns(project / "makini.duckdb"), columns(tmp_path / "r.duckdb")
    for table in set(wheel_columns) | set(repo_columns):
        assert wheel_columns.get(table) == repo_columns.get(table), table

    # the orchestration modules import from the installed package and read the project's config
    probe = [
        "import importlib.metadata, makini_source",
        "print(makini_source.__file__, importlib.metadata.version('makini-source'))",
        "import makini_source.orchestration",
    ]
    if importlib.util.find_spec("airflow"):
        probe.append("from makini_source.orchestration.airflow_dag import build_dag")
        probe.append("print(sorted(build_dag().task_ids))")
    if importlib.util.find_spec("dagster"):
        probe.append(
            "from makini_source.orchestration.dagster_definitions import build_definitions"
        )
        probe.append(
            "print(sorted(build_definitions().resolve_implicit_global_asset_job_def()"
            ".partitions_def.get_partition_keys()))"
        )
    orchestration_env = dict(env, AIRFLOW_HOME=str(tmp_path / "airflow"))
    shown = run([str(installed / "python"), "-c", "\n".join(probe)], project, orchestration_env)
    where, version = shown.stdout.splitlines()[0].split()
    assert where.startswith(str(installed.parent)) and version == "0.1.0"  # the wheel's copy
    names = sorted(sandbox.tokens)
    if importlib.util.find_spec("airflow"):
        assert str([f"makini_{name}" for name in names]) in shown.stdout
    if importlib.util.find_spec("dagster"):
        assert str(names) in shown.stdout
