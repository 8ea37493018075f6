"""deploy/helm/hark: `helm lint` and `helm template` for the defaults and every example, each rendered
object validated against the Kubernetes schemas (kubernetes-validate; KEDA's ScaledObject, a CRD, against
a small schema of the fields the chart sets), then the rules the platform depends on: each pack's
worker reads only its own queues, probes hit real endpoints, rollouts drain, PDBs and autoscalers
target the right Deployment, blue-green copies never collide."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from hark.broker import queue_key
from hark.cli import SUBCOMMANDS
from hark.queues import transcribe_queue
from hark.route_map import RouteMap
from hark.settings import Settings
from tests.unit.deploy_helpers import ROOT, hark_subcommands

CHART = ROOT / "deploy" / "helm" / "hark"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
VARIANTS = ["defaults", *[p.stem for p in EXAMPLES]]
K8S_VERSION = "1.30.0"
SUPERVISOR_STOP_MARGIN = 15  # workers.supervisor.STOP_MARGIN_SECONDS (not imported: that pulls the engine)
REDIS_FLAGS = {"--appendonly": "yes", "--appendfsync": "everysec", "--maxmemory-policy": "noeviction",
               "--client-output-buffer-limit": "pubsub 256mb 128mb 300"}  # fmt: skip
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                  "name": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"},
                "cooldownPeriod": {"type": "integer"},
                "advanced": {"type": "object", "properties": {"horizontalPodAutoscalerConfig": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"type": {"enum": ["redis", "prometheus"]},
                                   "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}},
            },
        },
    },
}  # fmt: skip
#: Prometheus Operator's ServiceMonitor (a CRD): the fields the chart sets.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"], "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object",
                                                            "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "authorization": {"type": "object", "required": ["credentials"], "properties": {
                            "type": {"type": "string"},
                            "credentials": {"type": "object", "required": ["name", "key"]}}}}}},
            },
        },
    },
}  # fmt: skip
#: CRDs kubernetes-validate has no schema for, checked against the small schemas above.
CRD_SCHEMAS = {"ScaledObject": SCALED_OBJECT_SCHEMA, "ServiceMonitor": SERVICE_MONITOR_SCHEMA}


def _helm() -> str:
    for candidate in (shutil.which("helm"), Path(sys.executable).parent / "helm"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("helm is not installed: run `make tools` (it puts helm in .venv/bin)")


def _run_helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "HELM_CACHE_HOME": "/tmp/hark-helm-cache"})  # fmt: skip


def _render(release: str, *values: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    done = _run_helm("template", release, str(CHART), *[a for v in values for a in ("-f", str(v))], *extra)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every variant rendered once: the defaults and each example."""
    out = {"defaults": _render("hark")}
    for example in EXAMPLES:
        out[example.stem] = _render("hark", example)
    return out


def _values(variant: str) -> dict:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if variant != "defaults":
        values.update(yaml.safe_load((CHART / "examples" / f"{variant}.yaml").read_text()))
    return values


def _of(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _containers(doc: dict) -> list[dict]:
    spec = doc["spec"]
    pod = (spec.get("jobTemplate", {}).get("spec", spec))["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from secret>") for e in container.get("env", [])}


def _pods(docs: list[dict], component: str) -> Iterator[tuple[dict, dict, dict]]:
    """(Deployment, main container, its env) for each pack's `component` (api|worker)."""
    for doc in _of(docs, "Deployment").values():
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == component:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            yield doc, container, _env(container)


def test_lint_defaults_and_examples() -> None:
    for values in [None, *EXAMPLES]:
        done = _run_helm("lint", str(CHART), *(["-f", str(values)] if values else []))
        assert done.returncode == 0, f"{values}: {done.stdout}{done.stderr}"


def test_defaults_render_one_complete_pack(rendered: dict) -> None:
    kinds = sorted(d["kind"] for d in rendered["defaults"])
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "StatefulSet", "Job", "CronJob"):
        assert kind in kinds, kind
    assert len(list(_pods(rendered["defaults"], "api"))) == len(list(_pods(rendered["defaults"], "worker"))) == 1


@pytest.fixture(scope="module")
def cached_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its multi-MB definitions file for every object; read each file once."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(original)
    yield
    kubernetes_validate.utils.schema_contents = original


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_match_the_kubernetes_schemas(rendered: dict, variant: str, cached_schemas: None) -> None:
    for doc in rendered[variant]:
        if doc["kind"] in CRD_SCHEMAS:  # KEDA's and Prometheus Operator's CRDs: not in kubernetes-validate
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_pack_pairs_an_api_with_its_own_workers(rendered: dict, variant: str) -> None:
    docs, packs = rendered[variant], _values(variant)["packs"]
    prefix = _values(variant).get("namePrefix", "")
    apis = {env["HARK_DEPLOYMENT"]: env for _, _, env in _pods(docs, "api")}
    workers = {env["HARK_DEPLOYMENT"]: (doc, env) for doc, _, env in _pods(docs, "worker")}
    assert set(apis) == set(workers) == {prefix + p["name"] for p in packs}
    for pack in packs:
        deployment = prefix + pack["name"]
        doc, env = workers[deployment]
        assert doc["metadata"]["labels"]["hark.dev/deployment"] == deployment
        assert apis[deployment]["REDIS_URL"] == env["REDIS_URL"]
        if _values(variant)["storage"]["strategy"] == "baked":
            assert "MODEL_URL" not in env
            assert doc["spec"]["template"]["spec"]["containers"][0]["image"].startswith(pack["image"]["repository"])
        else:
            assert env["MODEL_URL"].split(",") == pack["modelUrls"] and len(pack["modelUrls"]) <= 3
        assert apis[deployment]["HARK_EXPECT_LANGUAGES"] == ",".join(pack["languages"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_hit_real_endpoints_and_rollouts_drain(rendered: dict, variant: str) -> None:
    for _, container, env in _pods(rendered[variant], "api"):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == int(env["HARK_API_PORT"]) == 7100
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        startup = container["startupProbe"]  # hark api waits for its workers before gunicorn answers /health
        assert startup["httpGet"] == {"path": "/health", "port": "http"}
        assert startup["periodSeconds"] * startup["failureThreshold"] > float(env["HARK_EXPECT_WORKERS_SECONDS"])
        assert hark_subcommands(container["command"]) == ["api"]
    for doc, container, env in _pods(rendered[variant], "worker"):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(env["HARK_WORKER_METRICS_PORT"]) == 9101
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "metrics"}
        grace = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > float(env["HARK_SHUTDOWN_GRACE_SECONDS"]) + SUPERVISOR_STOP_MARGIN
        assert hark_subcommands(container["command"]) == ["worker"]
        if env["HARK_DEVICE"] == "cuda":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
            assert "worker-cuda" in container["image"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_hark_command_exists(rendered: dict, variant: str) -> None:
    for doc in rendered[variant]:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            for container in _containers(doc):
                for sub in hark_subcommands(container.get("command", []) + container.get("args", [])):
                    assert sub in SUBCOMMANDS, f"{doc['metadata']['name']} runs `hark {sub}`"


@pytest.mark.parametrize("variant", VARIANTS)
def test_disruption_budgets_and_services_select_their_pods(rendered: dict, variant: str) -> None:
    docs = rendered[variant]
    pdbs = list(_of(docs, "PodDisruptionBudget").values())
    for doc, _, _ in [*_pods(docs, "api"), *_pods(docs, "worker")]:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, doc["metadata"]["name"]
    services = _of(docs, "Service")
    for doc, _, _ in _pods(docs, "api"):
        service = services[doc["metadata"]["name"]]
        assert service["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscalers_target_the_pack_workers_and_queues(rendered: dict, variant: str) -> None:
    docs, values = rendered[variant], _values(variant)
    workers = {env["HARK_DEPLOYMENT"]: doc for doc, _, env in _pods(docs, "worker")}
    mode = values["autoscaling"]["mode"]
    scalers = _of(docs, {"keda": "ScaledObject", "hpa": "HorizontalPodAutoscaler"}[mode])
    assert len(scalers) == len(workers)
    for pack in values["packs"]:
        deployment = values.get("namePrefix", "") + pack["name"]
        worker = workers[deployment]
        assert "replicas" not in worker["spec"]  # the autoscaler owns it; a helm upgrade must not reset it
        scaler = scalers[worker["metadata"]["name"]]
        assert scaler["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        if mode == "keda":
            lists = {t["metadata"]["listName"] for t in scaler["spec"]["triggers"] if t["type"] == "redis"}
            queues = {queue_key(deployment, transcribe_queue(deployment, c)) for c in pack["checkpoints"]}
            assert queues <= lists
            assert all(name.split("\x06\x16")[0] in queues for name in lists), "a list of another pack"
            behavior = scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        else:
            metric = scaler["spec"]["metrics"][0]["pods"]
            assert metric["metric"]["name"] == "hark_worker_active_requests"
            assert metric["metric"]["selector"]["matchLabels"] == {"deployment": deployment}
            assert metric["target"]["averageValue"] == str(values["autoscaling"]["targetActiveRequestsPerPod"])
            behavior = scaler["spec"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_s3_init_priority_lists_follow_kombu(rendered: dict) -> None:
    scaler = next(iter(_of(rendered["storage-s3-init"], "ScaledObject").values()))
    lists = [t["metadata"]["listName"] for t in scaler["spec"]["triggers"] if t["type"] == "redis"]
    base = queue_key("english", transcribe_queue("english", "whisper-base"))
    assert {base, *(f"{base}\x06\x16{p}" for p in (3, 6, 9))} <= set(lists)
    assert any(t["type"] == "prometheus" for t in scaler["spec"]["triggers"])
    worker = next(d for d, _, _ in _pods(rendered["storage-s3-init"], "worker"))
    init = worker["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["hark", "checkpoints", "pull"] and init["args"] == _values("defaults")["packs"][0][
        "modelUrls"]


def test_redis_persists_and_never_evicts(rendered: dict) -> None:
    redis = next(iter(_of(rendered["defaults"], "StatefulSet").values()))
    argv = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert REDIS_FLAGS.items() <= flags.items() and flags["--maxmemory"]


def test_shared_volume_preload_jobs_pull_every_pack_url(rendered: dict) -> None:
    docs = rendered["three-packs"]
    urls = [u for p in _values("three-packs")["packs"] for u in p["modelUrls"]]
    for kind in ("Job", "CronJob"):
        container = _containers(next(iter(_of(docs, kind).values())))[0]
        assert container["args"][:2] == ["checkpoints", "pull"] and container["args"][2:2 + len(urls)] == urls
    assert not _of(rendered["storage-empty-dir"], "Job")  # no shared cache to warm


def test_blue_green_releases_do_not_collide() -> None:
    blue = _render("hark")
    green = _render("hark-v2", CHART / "examples" / "blue-green-v2.yaml")
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}  # noqa: E731
    assert not names(blue) & names(green)
    deployments = lambda docs: {env["HARK_DEPLOYMENT"] for _, _, env in _pods(docs, "worker")}  # noqa: E731
    assert not deployments(blue) & deployments(green)
    for _, _, env in _pods(green, "api"):  # v2 uses v1's Redis and license proxy
        assert env["REDIS_URL"] == "redis://hark-redis:6379/0" and env["API_BASE_URL"] == "http://hark-license-proxy:6699"
    assert not _of(green, "StatefulSet")


def _with_pack(**changes: object) -> dict:
    pack = {**_values("defaults")["packs"][0], **changes}
    return {"packs": [pack]}


@pytest.mark.parametrize(("override", "message"), [
    ({"storage": {"strategy": "nfs"}}, "storage.strategy"),
    (_with_pack(checkpoints=["whisper-tiny-en", "webhooks"]), "reserved"),
    (_with_pack(worker={"minReplicas": 0, "maxReplicas": 2}), "minReplicas"),
    ({"packs": [_with_pack()["packs"][0]] * 2}, "appears twice"),
    (_with_pack(checkpoints=["whisper-tiny-en"]), "same order"),
    ({"dispatcher": {"enabled": True}, "packs": [_with_pack()["packs"][0], _with_pack(name="other")["packs"][0]]},
     "in two packs"),
    ({"dispatcher": {"enabled": True, "fallbackPack": "nope"}}, "not a pack name"),
    ({"dispatcher": {"enabled": True, "extraRoutes": {"en": "http://elsewhere:7100"}}}, "already routed"),
    ({"metrics": {"apiAuth": "basic"}}, "metrics.apiAuth"),
    ({"metrics": {"apiAuth": "key", "serviceMonitor": {"enabled": True}}}, "apiKeySecret"),
], ids=["strategy", "reserved-checkpoint", "no-workers", "duplicate-pack", "urls-vs-checkpoints",
        "language-in-two-packs", "unknown-fallback-pack", "extra-route-twice", "metrics-auth",
        "scrape-without-key"])  # fmt: skip
def test_bad_values_are_refused_with_what_to_fix(override: dict, message: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(override))
    done = _run_helm("template", "hark", str(CHART), "-f", str(values))
    assert done.returncode != 0 and message in done.stderr, done.stderr


# --- dispatcher and Prometheus scraping ----------------------------------------------------------


def _dispatcher(docs: list[dict]) -> tuple[dict, dict, dict]:
    """(Deployment, its container, its env) of the dispatcher."""
    doc = next(d for d in _of(docs, "Deployment").values()
               if d["metadata"]["labels"]["app.kubernetes.io/component"] == "dispatcher")  # fmt: skip
    container = doc["spec"]["template"]["spec"]["containers"][0]
    return doc, container, _env(container)


def _selects(service: dict, pod_labels: dict) -> bool:
    return service["spec"]["selector"].items() <= pod_labels.items()


def test_dispatcher_is_off_by_default(rendered: dict) -> None:
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in rendered["defaults"]}
    assert "dispatcher" not in components


def test_dispatcher_routes_every_pack_language_to_that_packs_api(rendered: dict, tmp_path: Path) -> None:
    docs, values = rendered["three-packs"], _values("three-packs")
    doc, container, env = _dispatcher(docs)
    assert hark_subcommands(container["command"]) == ["dispatcher"]
    assert container["image"] == f"{values['images']['api']['repository']}:{values['images']['api']['tag']}"
    # The map: the ConfigMap file mounted where HARK_ROUTES points, loaded by the real loader.
    routes_path = Path(env["HARK_ROUTES"])
    pod = doc["spec"]["template"]["spec"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(routes_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = _of(docs, "ConfigMap")[volume["configMap"]["name"]]
    text = config_map["data"][routes_path.name]
    (tmp_path / routes_path.name).write_text(text)
    route_map = RouteMap.from_file(tmp_path / routes_path.name)
    # Each language of each pack -> that pack's own API Service (in this output, selecting its API pods).
    services = _of(docs, "Service")
    apis = {env["HARK_DEPLOYMENT"]: api for api, _, env in _pods(docs, "api")}
    for pack in values["packs"]:
        api = apis[pack["name"]]
        service = services[api["metadata"]["name"]]
        assert _selects(service, api["spec"]["template"]["metadata"]["labels"])
        assert {p["port"] for p in service["spec"]["ports"]} == {7100}
        for language in pack["languages"]:
            assert route_map.deployment_for(language).urls == (f"http://{service['metadata']['name']}:7100",)
    fallback_api = apis[values["dispatcher"]["fallbackPack"]]["metadata"]["name"]
    assert route_map.fallback is not None and route_map.fallback.urls == (f"http://{fallback_api}:7100",)
    assert set(route_map.routes) == {lang for pack in values["packs"] for lang in pack["languages"]}
    # Served on HARK_DISPATCHER_PORT behind its own Service and PDB; probes on its own /health.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(env["HARK_DISPATCHER_PORT"]) == Settings.model_fields["dispatcher_port"].default
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    labels = doc["spec"]["template"]["metadata"]["labels"]
    assert [s for s in services.values() if _selects(s, labels)] == [services[doc["metadata"]["name"]]]
    pdbs = [p for p in _of(docs, "PodDisruptionBudget").values()
            if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]  # fmt: skip
    assert len(pdbs) == 1
    # The pods roll when the map changes: the annotation is the map's checksum.
    annotation = doc["spec"]["template"]["metadata"]["annotations"]["checksum/routes"]
    assert annotation == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()


def test_dispatcher_pods_roll_when_packs_change(rendered: dict) -> None:
    before = _dispatcher(rendered["three-packs"])[0]["spec"]["template"]["metadata"]["annotations"]
    changed = _render("hark", CHART / "examples" / "three-packs.yaml", extra=("--set", "packs[0].languages={en,cy}"))
    after = _dispatcher(changed)[0]["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/routes"] != after["checksum/routes"]
    routes = _of(changed, "ConfigMap")["hark-dispatcher-routes"]["data"]["routes.yaml"]
    assert "cy: http://hark-english-api:7100" in routes


@pytest.mark.parametrize("variant", VARIANTS)
def test_api_and_worker_pods_are_annotated_for_scraping(rendered: dict, variant: str) -> None:
    metrics_auth_values = Settings.model_fields["metrics_auth"].annotation.__args__
    for component in ("api", "worker"):
        for doc, container, env in _pods(rendered[variant], component):
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            port_name = "http" if component == "api" else "metrics"
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port_name)
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
            if component == "api":  # in the cluster a scraper gets /metrics without an API key (values.yaml)
                assert env["HARK_METRICS_AUTH"] == _values(variant).get("metrics", {}).get("apiAuth", "open")
                assert env["HARK_METRICS_AUTH"] in metrics_auth_values


def test_scrape_annotations_can_be_switched_off() -> None:
    docs = _render("hark", extra=("--set", "metrics.podAnnotations=false"))
    for component in ("api", "worker"):
        for doc, _, _ in _pods(docs, component):
            assert "prometheus.io/scrape" not in doc["spec"]["template"]["metadata"].get("annotations", {})


def test_service_monitors_reach_every_api_and_worker_pod(rendered: dict) -> None:
    docs = rendered["three-packs"]
    services, monitors = _of(docs, "Service"), _of(docs, "ServiceMonitor")
    assert len(monitors) == 2 and not _of(rendered["defaults"], "ServiceMonitor")
    for component in ("api", "worker"):
        monitor = next(m for m in monitors.values() if m["spec"]["selector"]["matchLabels"].get(
            "app.kubernetes.io/component") == component)  # fmt: skip
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["path"] == "/metrics"
        chosen = [s for s in services.values()
                  if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]  # fmt: skip
        pods = list(_pods(docs, component))
        assert len(chosen) == len(pods) == 3
        for doc, container, _ in pods:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            (service,) = [s for s in chosen if _selects(s, labels)]
            port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
            assert port["targetPort"] in {p["name"] for p in container["ports"]}
