"""The Kubernetes manifests (deploy/k8s): every overlay renders, every object validates against
the Kubernetes schemas (KEDA's ScaledObject against its documented fields), and each workload
runs what the matching compose service runs: the same image, command and environment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.resource.config import Registry, compose_gpu_registry
from shared.config import Settings
from shared.worker import Worker
from tests.unit.deploy.kustomize import Obj, UnsupportedKustomization, render

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")

# k8s workload (kind, name, container) -> what compose runs for it: a compose service, or an
# entry of the compose-gpu registry (the containers the resource service starts under compose)
COMPOSE_MATCH: dict[str, dict[tuple[str, str, str], str]] = {
    "cpu": {
        ("Deployment", "gateway", "gateway"): "gateway",
        ("Deployment", "orchestrator", "orchestrator"): "orchestrator",
        ("StatefulSet", "redis", "redis"): "redis",
        ("Deployment", "llama-server", "llama-server"): "llama-server",
        ("Deployment", "stt", "stt"): "stt",
        ("Deployment", "tts", "tts"): "tts",
        ("Deployment", "llm", "llm"): "llm",
    },
    "gpu": {
        ("Deployment", "gateway", "gateway"): "gateway",
        ("Deployment", "orchestrator", "orchestrator"): "orchestrator",
        ("StatefulSet", "redis", "redis"): "redis",
        ("DaemonSet", "resource", "resource"): "resource",
        ("Deployment", "llm", "llm"): "llm-gpu",
        ("Deployment", "vlm", "vlm"): "vlm",
        ("Deployment", "stt", "stt"): "registry:whisper",
        ("Deployment", "tts", "tts"): "registry:chatterbox",
    },
}
# Variables a workload sets beyond its compose service, each for a stated reason.
EXTRA_ENV: dict[str, set[str]] = {
    # the agent arbitrates vLLM only; Whisper and Chatterbox are scheduled Deployments here
    "orchestrator@gpu": {"JARVIS_TURN_MODELS"},
    # a DaemonSet runs one agent per GPU node: each is its own resource service (its node's name)
    "resource@gpu": {"JARVIS_RESOURCE_SERVICE_ID"},
    # the registry's worker env omits the log level every compose service gets from x-env
    "registry:whisper": {"JARVIS_LOG_LEVEL"},
    "registry:chatterbox": {"JARVIS_LOG_LEVEL"},
}

# KEDA's ScaledObject (keda.sh/v1alpha1), the fields these manifests may use, from KEDA's
# documentation of ScaledObject and of the redis-streams scaler.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "redis-streams"},
                            "metadata": {
                                "type": "object",
                                "required": ["address", "stream", "consumerGroup", "lagCount"],
                                "additionalProperties": False,
                                # every value is a string in KEDA's trigger metadata
                                "properties": {
                                    k: {"type": "string"}
                                    for k in (
                                        "address",
                                        "databaseIndex",
                                        "stream",
                                        "consumerGroup",
                                        "lagCount",
                                        "activationLagCount",
                                    )
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


# ---- helpers ------------------------------------------------------------------------------


def rendered(overlay: str) -> list[Obj]:
    return render(K8S / "overlays" / overlay)


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(workload: Obj) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def all_containers(workload: Obj) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def container(workload: Obj, name: str) -> dict[str, Any]:
    return next(c for c in all_containers(workload) if c["name"] == name)


def interpolate(text: str) -> str:
    """compose's `${VAR:-default}` / `${VAR}` with nothing set in the environment."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def compose_services() -> dict[str, Any]:
    return yaml.safe_load(interpolate((ROOT / "compose.yaml").read_text()))["services"]


def _compose_value(v: Any) -> str | None:
    # compose interpolates before YAML sees the text: `${X:-false}` is the string "false"
    if v is None:
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)


def compose_runs(source: str) -> tuple[str, list[str], dict[str, str | None]]:
    """(image, argv, environment; None = passed through from the shell) of a compose service
    or of a compose-gpu registry entry."""
    if source.startswith("registry:"):
        rt = compose_gpu_registry()["models"][source.removeprefix("registry:")]["runtime"]
        return rt["image"], list(rt["command"]), dict(rt["env"])
    svc = compose_services()[source]
    argv = list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
    env = {k: _compose_value(v) for k, v in (svc.get("environment") or {}).items()}
    return svc["image"], argv, env


def k8s_env(objects: list[Obj], c: dict[str, Any]) -> dict[str, str | None]:
    """A container's environment: envFrom ConfigMaps of the render, then env (valueFrom = None)."""
    maps = by_kind(objects, "ConfigMap")
    env: dict[str, str | None] = {}
    for src in c.get("envFrom", []):
        ref = src["configMapRef"]
        if ref["name"] in maps:
            env.update(maps[ref["name"]]["data"])
        else:
            assert ref.get("optional"), f"{c['name']}: ConfigMap {ref['name']} is not in the render"
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")  # valueFrom (a Secret): None
    return env


def image_default_argv(image: str) -> list[str]:
    # the CMD of docker/Dockerfile's redis target: compose's redis service runs it as is
    assert image.startswith("jarvis/redis:")
    text = (ROOT / "docker" / "Dockerfile").read_text()
    redis_stage = text[text.index("AS redis") : text.index("AS runtime")]
    return json.loads(re.search(r"^CMD (\[.*\])$", redis_stage, re.M).group(1))  # type: ignore[union-attr]


def worker_stream_and_group(kind: str) -> tuple[str, str]:
    """The stream and consumer group a worker of `kind` consumes, as shared/worker.py names them
    (the manifests keep the default of one job shard)."""

    class Probe(Worker):
        async def process(self, job: Any) -> None:  # pragma: no cover - never run
            raise NotImplementedError

    w = Probe(Settings(job_shards=1), None, None, kind=kind)  # type: ignore[arg-type]
    (stream,) = w.streams
    return stream, w.group


def worker_kind(workload: Obj) -> str:
    argv = container(workload, workload["metadata"]["name"])["command"]
    if "--role" in argv:
        return argv[argv.index("--role") + 1]
    return argv[argv.index("-m") + 1].removeprefix("services.")


# ---- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for obj in objects:
        if obj["apiVersion"] == "keda.sh/v1alpha1":
            continue  # a CRD: checked against KEDA's fields below
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc}")
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "jarvis"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_worker_scales_on_its_job_streams_consumer_group_lag(overlay: str) -> None:
    objects = rendered(overlay)
    deployments = by_kind(objects, "Deployment")
    workers = {
        n: d
        for n, d in deployments.items()
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    }
    scaled = by_kind(objects, "ScaledObject")
    assert workers and set(scaled) == set(workers)
    redis = by_kind(objects, "Service")["redis"]
    redis_address = (
        f"redis.{redis['metadata']['namespace']}.svc.cluster.local:{redis['spec']['ports'][0]['port']}"
    )
    for name, so in scaled.items():
        jsonschema.validate(so, SCALED_OBJECT_SCHEMA)
        assert so["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in workers[name]["spec"], "KEDA owns the replica count"
        (trigger,) = so["spec"]["triggers"]
        stream, group = worker_stream_and_group(worker_kind(workers[name]))
        assert trigger["metadata"]["stream"] == stream
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["address"] == redis_address
        assert int(trigger["metadata"]["lagCount"]) >= 1
        assert so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    assert {worker_kind(w) for w in workers.values()} >= {"stt", "llm", "tts"}


def test_a_scaled_object_without_a_stream_is_refused_by_the_schema() -> None:
    so = by_kind(rendered("cpu"), "ScaledObject")["stt"]
    del so["spec"]["triggers"][0]["metadata"]["stream"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, SCALED_OBJECT_SCHEMA)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_run_the_same_image_command_and_environment_as_compose(overlay: str) -> None:
    objects = rendered(overlay)
    matched = set()
    for (kind, name, cname), source in COMPOSE_MATCH[overlay].items():
        workload = by_kind(objects, kind)[name]
        c = container(workload, cname)
        image, argv, env = compose_runs(source)
        assert c["image"] == image, f"{name}: image"
        k8s_argv = list(c.get("command", [])) + list(c.get("args", []))
        assert k8s_argv == (argv or image_default_argv(image)), f"{name}: command"
        matched.add((kind, name))
        if source == "redis":
            continue
        got = k8s_env(objects, c)
        extra = EXTRA_ENV.get(f"{name}@{overlay}", set()) | EXTRA_ENV.get(source, set())
        for var, value in env.items():
            if value is None:  # compose passes it through when the shell has it: optional here
                continue
            assert got.get(var) == value, f"{name}: {var}={got.get(var)!r}, compose has {value!r}"
        assert set(got) - set(env) == extra, f"{name}: variables compose does not set"
    # every Jarvis workload of the overlay has its compose counterpart checked
    jarvis = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in WORKLOADS}
    assert jarvis == matched


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_listens_beyond_what_a_service_exposes(overlay: str) -> None:
    objects = rendered(overlay)
    services = by_kind(objects, "Service")
    for o in objects:
        if o["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(o)
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        labels = o["spec"]["template"]["metadata"]["labels"]
        exposed = {
            p["targetPort"]
            for s in services.values()
            if s["spec"]["selector"].items() <= labels.items()
            for p in s["spec"]["ports"]
        }
        for c in all_containers(o):
            for port in c.get("ports", []):
                assert "hostPort" not in port
                assert port.get("name") in exposed or port["containerPort"] in exposed, (
                    f"{o['metadata']['name']}/{c['name']} declares {port} that no Service exposes"
                )
    # each Service reaches something: a named port its pods declare, or the vLLM the agent publishes
    for s in services.values():
        assert s["spec"]["selector"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_requests_limits_and_disruption_budgets(overlay: str) -> None:
    objects = rendered(overlay)
    gateway = container(by_kind(objects, "Deployment")["gateway"], "gateway")
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["path"] == "/healthz"
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in by_kind(objects, "PodDisruptionBudget").values()
    }
    for o in objects:
        if o["kind"] not in WORKLOADS:
            continue
        for c in all_containers(o):
            assert c["resources"]["requests"] and c["resources"]["limits"], f"{c['name']}: resources"
        main = container(o, o["metadata"]["name"])
        assert "livenessProbe" in main, f"{o['metadata']['name']}: no liveness probe"
        # one fixed replica (llama-server): a budget would only block node drains
        if o["kind"] == "Deployment" and o["spec"].get("replicas") != 1:
            assert o["metadata"]["name"] in pdbs, f"{o['metadata']['name']}: no PodDisruptionBudget"


def test_gpu_workers_and_the_resource_agent_land_on_gpu_nodes_and_request_a_gpu() -> None:
    objects = rendered("gpu")
    deployments = by_kind(objects, "Deployment")
    for name in ("stt", "tts"):
        d = deployments[name]
        assert container(d, name)["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod_spec(d)["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(d)[
            "tolerations"
        ]
    for name in ("llm", "vlm", "gateway", "orchestrator"):
        assert "nvidia.com/gpu" not in str(deployments[name])
    agent = by_kind(objects, "DaemonSet")["resource"]
    spec = pod_spec(agent)
    assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert container(agent, "resource")["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the engine it manages runs beside it, sharing the socket DOCKER_HOST names
    engine = container(agent, "docker")
    assert engine["restartPolicy"] == "Always"  # a sidecar: up before the agent starts
    sock = {m["name"]: m["mountPath"] for m in engine["volumeMounts"]}["docker-socket"]
    resource_env = k8s_env(objects, container(agent, "resource"))
    assert resource_env["DOCKER_HOST"] == f"unix://{sock}/docker.sock"
    assert "--host=unix:///var/run/docker.sock" in engine["args"]  # no TCP listener


def test_the_agents_registry_is_compose_gpus_llm_published_on_the_pod() -> None:
    objects = rendered("gpu")
    registry = Registry.model_validate_json(
        by_kind(objects, "ConfigMap")["resource-registry"]["data"]["registry.json"]
    )
    assert set(registry.models) == {"llm"}
    ours = registry.models["llm"].model_dump()
    compose = Registry.model_validate(compose_gpu_registry()).models["llm"].model_dump()
    differs = {k for k in ours["runtime"] if ours["runtime"][k] != compose["runtime"][k]}
    assert differs == {"ports", "volumes"}
    assert ours["runtime"]["ports"] == {"8000/tcp": 8000}  # the port the Service jarvis-llm targets
    assert {k: v for k, v in ours.items() if k != "runtime"} == {
        k: v for k, v in compose.items() if k != "runtime"
    }
    (port,) = by_kind(objects, "Service")["jarvis-llm"]["spec"]["ports"]
    assert port["targetPort"] == 8000
    # the orchestrators ask the agent for the models it has
    turn_models = json.loads(
        by_kind(objects, "ConfigMap")["jarvis-orchestrator"]["data"]["JARVIS_TURN_MODELS"]
    )
    assert set(turn_models.values()) <= set(registry.models)


def test_redis_keeps_an_append_only_file_on_a_volume_claim() -> None:
    redis = by_kind(rendered("cpu"), "StatefulSet")["redis"]
    c = container(redis, "redis")
    assert c["command"][c["command"].index("--appendonly") + 1] == "yes"
    data_dir = c["command"][c["command"].index("--dir") + 1]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[data_dir] in {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches:\n  - path: p.yaml\n")
    with pytest.raises(UnsupportedKustomization, match="patches"):
        render(tmp_path)
