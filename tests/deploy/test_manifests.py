"""The Kubernetes manifests: rendered with kustomize, validated against the Kubernetes schemas with
kubernetes-validate in strict mode, and checked against what the service and its image really do.

KServe's kinds have no schema in kubernetes-validate: their embedded core types (the runtime's container,
volumes and security context) are validated as a Pod, and the references between them are checked here.
Nothing is applied to a cluster."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.core.config import Settings
from service.core.cpu import available_cpus

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the dev extra is not installed")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes the manifests are for: the preStop `sleep` action is on by default from 1.30.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """`kustomize build` (or kubectl's built-in kustomize) of a folder, as parsed documents."""
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(folder)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(folder)]
    else:
        pytest.skip("neither kustomize nor kubectl is on PATH to render deploy/k8s")
    rendered = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), f"one resource of each kind expected, got {kinds}"
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind(kustomize(K8S / "base"))


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict[str, Any]]:
    return by_kind(kustomize(K8S / "kserve"))


def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec["containers"]
    return only


def dockerfile_user() -> tuple[int, int]:
    match = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile sets no numeric USER uid:gid"
    return int(match[1]), int(match[2])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_base_manifests_pass_strict_schema_validation(base: dict[str, dict[str, Any]], version: str) -> None:
    assert set(base) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for doc in base.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_an_unknown_field(base: dict[str, dict[str, Any]]) -> None:
    deployment = yaml.safe_load(yaml.safe_dump(base["Deployment"]))
    container(deployment["spec"]["template"]["spec"])["probes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="probes"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_selectors_pick_the_deployment_pods(base: dict[str, dict[str, Any]]) -> None:
    deployment = base["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": base["Service"]["spec"]["selector"],
        "PodDisruptionBudget": base["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, f"{kind} has an empty selector (it would pick every pod in the namespace)"
        assert selector.items() <= pod_labels.items(), f"{kind} selector {selector} misses {pod_labels}"
    target = base["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_cpu_limit_is_the_quota_the_service_sizes_its_threads_by(
    base: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    resources = container(base["Deployment"]["spec"]["template"]["spec"])["resources"]
    assert resources["requests"] == resources["limits"], "requests = limits keeps the pod Guaranteed"
    cpus = resources["limits"]["cpu"]
    assert re.fullmatch(r"\d+", cpus), f"a whole-CPU limit: service/core/cpu.py rounds {cpus} up, oversubscribing"
    # What the kubelet writes for that limit, read back as the service reads it.
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(f"{int(cpus) * 100_000} 100000\n")
    assert available_cpus(cpu_max) == min(int(cpus), available_cpus(tmp_path / "absent"))


def test_pod_runs_as_the_image_user_on_a_read_only_root(base: dict[str, dict[str, Any]]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    uid, gid = dockerfile_user()
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container(pod)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container(pod)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "multipart uploads spool to /tmp: it must be writable"


@pytest.mark.parametrize("which", ["base", "kserve"])
def test_the_prediction_log_is_off_or_shared_by_every_replica(
    base: dict[str, dict[str, Any]], kserve: dict[str, dict[str, Any]], which: str
) -> None:
    """The root file system is read-only and replicas come and go: no per-pod SQLite log."""
    pod = base["Deployment"]["spec"]["template"]["spec"] if which == "base" else kserve["ServingRuntime"]["spec"]
    env = {item["name"]: item for item in container(pod).get("env", [])}
    names = {name.upper() for name in Settings.model_fields}
    assert set(env) <= names, f"not settings of the service: {set(env) - names}"
    assert env["PREDICTION_LOG"]["value"] == "false" or "PREDICTION_LOG_URL" in env


def test_probes_and_port_match_the_service(base: dict[str, dict[str, Any]]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    main = container(pod)
    assert main["ports"] == [
        {"name": "http", "containerPort": Settings().port}, {"name": "grpc", "containerPort": Settings().grpc_port}
    ]
    service_ports = {port["name"]: port for port in base["Service"]["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # SIGTERM comes after preStop; uvicorn then drains for GRACEFUL_SHUTDOWN_S before the kubelet's SIGKILL.
    needed = main["lifecycle"]["preStop"]["sleep"]["seconds"] + Settings().graceful_shutdown_s
    assert pod["terminationGracePeriodSeconds"] > needed


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kserve_runtime_pod_parts_pass_strict_schema_validation(
    kserve: dict[str, dict[str, Any]], version: str
) -> None:
    runtime = kserve["ServingRuntime"]["spec"]
    as_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cell-classifier-runtime"},
        "spec": {key: runtime[key] for key in ("containers", "volumes", "securityContext",
                                                "automountServiceAccountToken")},
    }
    kubernetes_validate.validate(as_pod, version, strict=True)


def test_inference_service_speaks_v2_through_the_runtime(
    kserve: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]
) -> None:
    runtime, service = kserve["ServingRuntime"], kserve["InferenceService"]
    assert (runtime["apiVersion"], service["apiVersion"]) == ("serving.kserve.io/v1alpha1", "serving.kserve.io/v1beta1")
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2"
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {fmt["name"] for fmt in runtime["spec"]["supportedModelFormats"]}
    # The same image and resources as the plain Deployment.
    plain = container(base["Deployment"]["spec"]["template"]["spec"])
    served = container(runtime["spec"])
    assert served["image"] == plain["image"]
    assert served["resources"] == plain["resources"]
    assert served["ports"][0]["containerPort"] == Settings().port
    # gRPC: KServe sends protocolVersion grpc-v2 to the port named h2c.
    assert "grpc-v2" in runtime["spec"]["protocolVersions"]
    assert {port.get("name"): port["containerPort"] for port in served["ports"]}["h2c"] == Settings().grpc_port
    uid, gid = dockerfile_user()
    assert (runtime["spec"]["securityContext"]["runAsUser"], runtime["spec"]["securityContext"]["runAsGroup"]) == (
        uid, gid,
    )
