"""docker-compose.yml and the Dockerfile, checked without Docker: the stack must use the same
broker-config files as the launchers, give every variable those files read, keep ports, volumes
and routes consistent, and start participants that exist. The participant itself runs here
against a real 3-node cluster started from the same config file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from secsync.apps.participant import (
    ParticipantOptions,
    load_or_create_secret,
    parse_options,
    participate,
)
from secsync.servers.binary import find_nats_server
from secsync.servers.cluster import Cluster, ClusterNode, cluster_config_path
from secsync.servers.leaf import HubNode, LeafNode, hub_config_path, leaf_config_path
from secsync.servers.region import SuperClusterNode, supercluster_config_path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
VARIABLE = re.compile(r"\$(SECSYNC_[A-Z0-9_]+)")
INCLUDE = re.compile(r"^\s*include\s+\"?([^\s\"]+)\"?", re.MULTILINE)


# --- reading the files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def nats_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("nats:")
    }


def participant_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if "build" in s}


def config_text(path: Path) -> str:
    """The config without its comment lines."""
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def config_files(path: Path) -> list[Path]:
    """``path`` and what it includes, recursively (includes are relative to the includer)."""
    files = [path]
    for included in INCLUDE.findall(config_text(path)):
        target = (path.parent / included).resolve()
        assert target.is_file(), f"{path.name} includes {included}, which does not exist"
        files.extend(config_files(target))
    return files


def variables(path: Path) -> set[str]:
    """Every $SECSYNC_... variable ``path`` and its includes read."""
    return {v for f in config_files(path) for v in VARIABLE.findall(config_text(f))}


def mounted_host_path(service: dict[str, Any], container_path: str) -> Path:
    """The host file behind ``container_path``, through the service's bind mounts."""
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith(".") and container_path.startswith(target.rstrip("/") + "/"):
            return (ROOT / source / container_path[len(target) :].lstrip("/")).resolve()
    raise AssertionError(f"{container_path} is not on a bind mount of the service")


def flag(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def host_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of each published port."""
    found = []
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        found.append((int(parts[-2]), int(parts[-1])))
    return found


# --- the NATS services -------------------------------------------------------------------------


def test_nats_nodes_run_the_launchers_cluster_config(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    nodes = nats_services(compose)
    assert sorted(nodes) == ["n1", "n2", "n3"]
    launcher = ClusterNode(
        "n1", tmp_path, cluster_name="c", port=1, http_port=2, cluster_port=3, route_ports=[4]
    )
    for name, service in nodes.items():
        config = mounted_host_path(service, flag(service["command"], "-c"))
        assert config.is_file(), name
        # the very file secsync.servers.cluster.Cluster starts its nodes from
        assert config == launcher.config_path == cluster_config_path().resolve()
        # the mount is read-only: the servers cannot change their config
        assert any(str(v).endswith(":ro") for v in service["volumes"] if str(v).startswith("."))


def test_environment_covers_every_variable_of_the_config(compose: dict[str, Any]) -> None:
    wanted = variables(cluster_config_path())
    assert "SECSYNC_NATS_ROUTES" in wanted  # sanity: the scan reads the file
    launcher = ClusterNode(
        "n1",
        "/nonexistent",
        cluster_name="secsync",
        port=1,
        http_port=2,
        cluster_port=3,
        route_ports=[4, 5],
    )._environment()
    # the launcher sets exactly what the file reads, and so does every compose node
    assert set(launcher) == wanted
    for name, service in nats_services(compose).items():
        environment = service["environment"]
        assert set(environment) == wanted, name
        assert all(isinstance(value, str) for value in environment.values()), name


def test_every_config_file_gets_its_variables_from_its_launcher(tmp_path: Path) -> None:
    """Not only the compose stack's file: each launcher sets exactly what its file reads."""
    cases = {
        supercluster_config_path(): SuperClusterNode(
            "a1",
            tmp_path,
            region="a",
            port=1,
            http_port=2,
            cluster_port=3,
            route_ports=[4, 5],
            gateway_port=6,
            advertise_port=6,
            gateways={"a": [6], "b": [7]},
        ),
        hub_config_path(): HubNode(tmp_path, port=1, http_port=2, leaf_port=3),
        leaf_config_path(): LeafNode(
            "leaf1", tmp_path, port=1, http_port=2, remotes=["nats-leaf://127.0.0.1:3"]
        ),
    }
    for path, server in cases.items():
        wanted = variables(path)
        given = set(server._environment())
        assert wanted <= given, path.name
        # the leaf has no store: the broker's store variable is the only one it may ignore
        assert given - wanted <= {"SECSYNC_NATS_STORE_DIR"}, path.name


def test_nats_server_accepts_each_nodes_config_and_flags(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    binary = find_nats_server()
    for name, service in nats_services(compose).items():
        command = list(service["command"])
        command[command.index("-c") + 1] = str(mounted_host_path(service, flag(command, "-c")))
        environment = dict(service["environment"])
        environment["SECSYNC_NATS_STORE_DIR"] = json.dumps(str(tmp_path / name))
        result = subprocess.run(
            [str(binary), *command, "-t"],
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "is valid" in result.stdout + result.stderr


def test_ports_volumes_and_routes_are_consistent(compose: dict[str, Any]) -> None:
    nodes = nats_services(compose)
    published: list[int] = []
    for service in compose["services"].values():
        published.extend(host for host, _ in host_ports(service))
    assert len(published) == len(set(published)), f"host port used twice: {published}"

    declared = set(compose.get("volumes") or {})
    data_volumes: list[str] = []
    server_names: set[str] = set()
    cluster_names: set[str] = set()
    for name, service in nodes.items():
        env = service["environment"]
        client, http = int(env["SECSYNC_NATS_PORT"]), int(env["SECSYNC_NATS_HTTP_PORT"])
        assert {container for _, container in host_ports(service)} == {client, http}, name
        # every bind of a port is on loopback: the cluster has no authentication
        assert all(str(spec).startswith("127.0.0.1:") for spec in service["ports"]), name
        # listeners opened to the container network, on the ports the file is given
        assert flag(service["command"], "-a") == "0.0.0.0"
        cluster_url = flag(service["command"], "--cluster")
        assert cluster_url == f"nats://0.0.0.0:{env['SECSYNC_NATS_CLUSTER_PORT']}", name
        # its own named volume, mounted where the store directory points
        store = unquote(env["SECSYNC_NATS_STORE_DIR"])
        mounts = [str(v).split(":") for v in service["volumes"]]
        at_store = [source for source, target, *_ in mounts if target == store]
        assert len(at_store) == 1, name
        assert at_store[0] in declared, name
        data_volumes.append(at_store[0])
        server_names.add(unquote(env["SECSYNC_NATS_SERVER_NAME"]))
        cluster_names.add(unquote(env["SECSYNC_NATS_CLUSTER_NAME"]))
        # routes: to every other node, by service name and that node's route port
        routes = json.loads(env["SECSYNC_NATS_ROUTES"])
        targets = set()
        for route in routes:
            match = re.fullmatch(r"nats-route://([a-z0-9_-]+):(\d+)", route)
            assert match is not None, route
            other = match[1]
            assert other in nodes and other != name, route
            assert int(match[2]) == int(nodes[other]["environment"]["SECSYNC_NATS_CLUSTER_PORT"])
            targets.add(other)
        assert targets == set(nodes) - {name}
        # the health check asks this node's own monitoring port
        health = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{http}/healthz" in health, name
    assert len(set(data_volumes)) == len(nodes), "each node needs its own data volume"
    assert server_names == set(nodes)
    assert len(cluster_names) == 1


# --- the participants -----------------------------------------------------------------------------


def test_participants_run_an_existing_module_against_the_cluster(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text()
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
    assert entrypoint is not None
    command = json.loads(entrypoint[1])
    assert command[:2] == ["python", "-m"]
    module = command[2]
    assert module == "secsync.apps.participant"
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    source = Path(spec.origin).read_text()
    # what the image copies exists, and it is what the package build needs
    for copied in re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", dockerfile, re.MULTILINE):
        for path in copied.split():
            assert (ROOT / path).exists(), path

    nodes = nats_services(compose)
    participants = participant_services(compose)
    assert sorted(participants) == ["alice", "bob", "carol"]
    key_files = set()
    for name, service in participants.items():
        assert service["build"] == "."
        assert "command" not in service or isinstance(service["command"], list)
        assert set(service["depends_on"]) == set(nodes)
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
        env = service["environment"]
        for variable in env:  # only variables the participant reads
            assert f'"{variable}"' in source, f"{name}: {variable} is not read"
        for url in env["SECSYNC_SERVERS"].split(","):
            match = re.fullmatch(r"nats://([a-z0-9_-]+):(\d+)", url)
            assert match is not None, url
            assert match[1] in nodes
            assert int(match[2]) == int(nodes[match[1]]["environment"]["SECSYNC_NATS_PORT"])
        options = parse_options_from(env)
        assert options.name == name
        assert options.replicas == 3  # the stream is replicated over the three nodes
        assert options.wanted_lines == options.lines * len(participants)
        key_dir = str(options.key_file.parent)
        assert any(str(v).split(":")[1] == key_dir for v in service["volumes"]), name
        key_files.add(options.key_file)
    assert len(key_files) == 1  # one shared document key


def parse_options_from(environment: dict[str, str]) -> ParticipantOptions:
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        return parse_options([])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_no_value_is_interpolated_by_compose(compose: dict[str, Any]) -> None:
    """docker compose replaces $NAME in the file with its own environment: the stack must not
    depend on the caller's variables (nats-server reads the SECSYNC_* ones, not compose)."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    found = [s for s in strings(compose) if "$" in s.replace("$$", "")]
    assert found == []
    assert "$" not in COMPOSE.read_text().split("services:", 1)[1].replace("$$", "")


def test_the_first_key_file_wins(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "doc.key"
    made = iter(["first", "second"])
    assert load_or_create_secret(path, lambda: next(made)) == "first"
    assert load_or_create_secret(path, lambda: next(made)) == "first"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["doc.key"]  # no temporary file left


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("compose-cluster")).start()
    try:
        yield made
    finally:
        made.close()


async def test_three_participants_converge_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """Like the compose stack: three participants, the default R3 stream, one key file they share
    (created by whoever comes first); carol runs as the image does, configured by the
    environment only."""
    key_file = tmp_path / "secrets" / "demo-document.key"
    env = {
        "SECSYNC_NAME": "carol",
        "SECSYNC_SERVERS": ",".join(cluster.urls),
        "SECSYNC_KEY_FILE": str(key_file),
        "SECSYNC_STREAM_REPLICAS": "3",
        "SECSYNC_EXPECT_LINES": "6",
        "SECSYNC_LINES": "2",
        "SECSYNC_INTERVAL": "0",
        "SECSYNC_TIMEOUT": "60",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "secsync.apps.participant",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said: list[str] = []
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    participate(
                        ParticipantOptions(
                            name=name,
                            servers=tuple(cluster.urls),
                            key_file=key_file,
                            lines=2,
                            interval=0,
                            expect_lines=6,
                            timeout=60,
                            replicas=3,
                            config_overrides={"batch_interval": 0.005, "request_timeout": 2.0},
                        ),
                        say=said.append,
                    )
                    for name in ("alice", "bob")
                ),
                proc.communicate(),
            ),
            timeout=90,
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    (ok_a, text_a), (ok_b, text_b), (output, _) = results
    printed = output.decode()
    assert proc.returncode == 0, printed
    assert ok_a and ok_b, said
    result = json.loads(printed.split("RESULT ", 1)[1].splitlines()[0])
    assert result["name"] == "carol"
    assert text_a == text_b == result["text"]
    assert sorted(text_a.splitlines()) == sorted(
        f"{name}: line {i}" for name in ("alice", "bob", "carol") for i in (1, 2)
    )
    assert "[carol] connected to" in printed
    assert any(line.startswith("[alice] typed: alice: line 2") for line in said)
    assert await cluster_stream_replicas(cluster, "SECSYNC") == 3


async def cluster_stream_replicas(cluster: Cluster, stream: str) -> int:
    import nats

    nc = await nats.connect(cluster.urls)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.config.num_replicas or 0)
    finally:
        await nc.close()
