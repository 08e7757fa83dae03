"""compose.yaml, its CPU override and .env.example, checked without a Docker engine.

`docker-compose config` (Debian's docker-compose, Compose file format 3.9) parses,
validates against its schema and interpolates compose.yaml with .env.example as .env.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from .files import REPO, compose_variables, read_env_file

COMPOSE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed and scripts/test could not install it (apt-get)")
    return exe


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """compose.yaml as docker-compose resolves it with .env.example copied to .env."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(COMPOSE, project / "compose.yaml")
    shutil.copytree(REPO / "webui-config", project / "webui-config")
    shutil.copy(ENV_EXAMPLE, project / ".env")
    done = subprocess.run(
        [
            _docker_compose(),
            "--project-directory",
            str(project),
            "-f",
            str(project / "compose.yaml"),
            "config",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"docker-compose config rejected compose.yaml:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def test_engine_publishes_api_on_loopback_only(resolved: dict) -> None:
    (port,) = resolved["services"]["engine"]["ports"]
    assert str(port).startswith("127.0.0.1:8080:8080"), port


def test_engine_gets_gpu_memlock_shm_and_a_patient_healthcheck(resolved: dict) -> None:
    engine = resolved["services"]["engine"]
    (device,) = engine["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert engine["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert engine["shm_size"]
    health = engine["healthcheck"]
    assert "/health" in " ".join(health["test"])
    assert health["start_period"] in ("1h", "60m")
    assert engine["build"]["target"] == "engine"


def test_models_folder_is_read_only(resolved: dict) -> None:
    (volume,) = resolved["services"]["engine"]["volumes"]
    assert volume.endswith(":/models:ro"), volume


def test_webui_waits_for_healthy_engine_and_keeps_its_data(resolved: dict) -> None:
    webui = resolved["services"]["webui"]
    assert webui["image"].startswith("ghcr.io/open-webui/open-webui:")
    assert webui["depends_on"]["engine"]["condition"] == "service_healthy"
    (port,) = webui["ports"]
    assert str(port).endswith(":3000:8080/tcp") or ":3000:8080" in str(port)
    assert any(v.startswith("webui-data:/app/backend/data") for v in webui["volumes"])
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


def test_webui_env_file_and_compose_do_not_both_set_a_variable() -> None:
    env = read_env_file(REPO / "webui-config" / "webui.env")
    compose_env = yaml.safe_load(COMPOSE.read_text())["services"]["webui"]["environment"]
    overlap = set(env) & set(compose_env)
    assert not overlap, f"set in both webui-config/webui.env and compose.yaml: {overlap}"
