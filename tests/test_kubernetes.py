"""Kubernetes manifests (deploy/k8s): every render's overlays build with Debian's kustomize, validate strictly against
Kubernetes' schemas, carry the hardening, health contract, port and GPU requests of the answers, deploy by digest
through make, and pass checkov with only justified exceptions. No cluster runs here: ids say static-only."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml

from helpers import k8s_tools
from helpers.checkov import run_checkov
from helpers.answers import choices, DEFAULT_ANSWERS, MATRIX
from helpers.combos import Combo, COMBOS, DEFAULT_COMBO, PAIRWISE_COMBOS
from helpers.engine import engine_required
from helpers.render import render

# The Kubernetes releases the objects must validate against: trixie's kubectl (1.32) and the newest schema bundled
KUBERNETES_VERSIONS = ["1.32", kubernetes_validate.latest_version()]
DIGEST = "sha256:" + "4f" * 32
TRAIN_DIGEST = "sha256:" + "7a" * 32
REGISTRY_IMAGE = "registry.example.org/team/iris-classifier"
SERVE_NAME = "iris-classifier"  # image_name of DEFAULT_ANSWERS' project name
ROUTES = {"liveness": "/health", "readiness": "/ready", "startup": "/ready"}
GRACEFUL_SHUTDOWN_S = 8  # uvicorn's timeout_graceful_shutdown in serve.py
CRD_KINDS = {"InferenceService", "ServingRuntime"}  # KServe's: not in Kubernetes' schemas, checked field by field


@dataclass(frozen=True)
class Case:
    """One render: a combination, log_predictions and a port."""

    combo: Combo
    log_predictions: bool = False
    serve_port: int = 8000

    @property
    def answers(self) -> dict[str, Any]:
        return {**self.combo.answers, "log_predictions": self.log_predictions, "serve_port": self.serve_port}

    @property
    def uid(self) -> int:
        return MATRIX["base_image"][self.combo.base_image]["uid"]

    @property
    def id(self) -> str:
        combo = replace(self.combo, log_predictions=self.log_predictions).id.rsplit("-", 1)[0]  # its kind is ours
        return f"{combo}-{self.serve_port}"


def _cases() -> list[Case]:
    """Every model source x base image x gpu x log_predictions (the answers the manifests depend on), each with one
    framework and Python that allow it; then one render per framework, to show the manifests do not depend on it."""
    cases: list[Case] = []
    for base in choices("base_image"):
        for gpu in (False, True):
            for source in choices("model_source"):
                combo = next((c for c in COMBOS if (c.base_image, c.gpu, c.model_source) == (base, gpu, source)
                              and c.framework == DEFAULT_COMBO.framework), None) or next(
                    (c for c in COMBOS if (c.base_image, c.gpu, c.model_source) == (base, gpu, source)), None)
                if combo is None:
                    continue  # refused by the questions (distroless + gpu, nvidia-cuda without gpu)
                combo = replace(combo, kubernetes=True)  # a pairwise render may have answered no
                for log in (False, True):
                    cases.append(Case(combo, log, 8000 if not log else 9137))
    return cases


# and every pair of answers (tests/helpers/pairs.py) in the renders that have manifests
CASES = list(dict.fromkeys(_cases() + [Case(c, c.log_predictions) for c in PAIRWISE_COMBOS if c.kubernetes]))
FRAMEWORK_CASES = [Case(replace(DEFAULT_COMBO, framework=f)) for f in choices("framework")]


def overlays(case: Case) -> list[str]:
    return ["dev", "prod", *(["gpu"] if case.combo.gpu else []), "kserve"]


TARGETS = [(case, target) for case in CASES for target in [*overlays(case), "train", "namespace"]]


def kustomization_dir(target: str) -> str:
    return target if target in ("train", "namespace") else f"overlays/{target}"


# ---- tools and builds, once per session ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def k8s_bin() -> Path:
    """Debian trixie's kubectl and kustomize; CI fails without them, elsewhere the tests skip with one line."""
    try:
        return k8s_tools.install()
    except (k8s_tools.ToolError, OSError, subprocess.SubprocessError) as error:
        if engine_required():
            pytest.fail(f"Kubernetes tests need Debian's kubectl and kustomize: {error}", pytrace=False)
        pytest.skip(f"Kubernetes tests skipped: {error}")


@pytest.fixture(scope="session")
def k8s_project(tmp_path_factory: pytest.TempPathFactory):
    cache: dict[Case, Path] = {}

    def _render(case: Case) -> Path:
        if case not in cache:
            cache[case] = render(tmp_path_factory.mktemp(case.id), case.answers)
        return cache[case]

    return _render


def kustomize(k8s_bin: Path, path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([str(k8s_bin / "kustomize"), "build", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"kustomize build {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def built(k8s_bin: Path, k8s_project) -> Any:
    """The objects of a render's kustomization, built once: as committed, and pinned to a digest the way
    `make deploy` pins it (a kustomization on top with `images:`)."""
    cache: dict[tuple[Case, str, bool], list[dict[str, Any]]] = {}

    def _built(case: Case, target: str, pinned: bool = False) -> list[dict[str, Any]]:
        key = (case, target, pinned)
        if key not in cache:
            root = k8s_project(case) / "deploy" / "k8s"
            path = root / kustomization_dir(target)
            if pinned and target != "namespace":
                name = f"{SERVE_NAME}-train" if target == "train" else SERVE_NAME
                pin = root / "pinned" / target
                pin.mkdir(parents=True, exist_ok=True)
                (pin / "kustomization.yaml").write_text(yaml.safe_dump({
                    "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                    "resources": [f"../../{kustomization_dir(target)}"],
                    "images": [{"name": name, "newName": REGISTRY_IMAGE,
                                "digest": TRAIN_DIGEST if target == "train" else DIGEST}]}))
                path = pin
            cache[key] = kustomize(k8s_bin, path)
        return cache[key]

    return _built


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def kserve_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod KServe makes of the InferenceService's predictor: the runtime's container with the model's fields
    merged in (lists appended, resources key by key), the runtime's volumes and the predictor's."""
    (runtime,) = of_kind(objects, "ServingRuntime")
    (isvc,) = of_kind(objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = runtime["spec"]["containers"]
    merged = dict(container)
    for key, value in predictor["model"].items():
        if key in ("modelFormat", "runtime", "protocolVersion"):
            continue
        if isinstance(value, list):
            merged[key] = [*container.get(key, []), *value]
        elif key == "resources":
            merged[key] = {k: {**container[key].get(k, {}), **value.get(k, {})} for k in ("requests", "limits")}
        else:
            merged[key] = value
    pod = {k: v for k, v in predictor.items() if k not in ("model", "minReplicas", "maxReplicas", "scaleMetric",
                                                            "scaleTarget")}
    return {**pod, "containers": [merged],
            "volumes": [*runtime["spec"].get("volumes", []), *predictor.get("volumes", [])]}


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of every workload: Deployments, Jobs and KServe's predictor."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "InferenceService":
            yield obj, kserve_pod(objects)


def serve_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The serving container: the Deployment's, or KServe's predictor's."""
    ((_, spec),) = [(o, s) for o, s in pod_specs(objects) if o["kind"] != "Job"]
    (container,) = spec["containers"]
    return container


# ---- build and validate --------------------------------------------------------------------------------------------

def test_kubernetes_false_renders_no_manifests(tmp_path: Path) -> None:
    project = render(tmp_path / "p", {**DEFAULT_ANSWERS, "kubernetes": False})
    assert not (project / "deploy").exists()
    assert not (project / "make" / "k8s.mk").exists()
    assert (render(tmp_path / "q", DEFAULT_ANSWERS) / "make" / "k8s.mk").is_file()


@pytest.mark.parametrize("case,target", TARGETS, ids=[f"{c.id}-{t}-static-only" for c, t in TARGETS])
def test_builds_and_validates_strictly(built, case: Case, target: str) -> None:
    objects = built(case, target)
    assert objects, f"{target} built to nothing"
    kinds = {o["kind"] for o in objects}
    expected = {
        "namespace": {"Namespace"},
        "train": {"Job", "PersistentVolumeClaim", "NetworkPolicy"},
        "kserve": {"InferenceService", "ServingRuntime", "NetworkPolicy"},
    }.get(target, {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount",
                   "NetworkPolicy"})
    assert expected <= kinds, f"{target}: missing {expected - kinds}"
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == SERVE_NAME, f"{obj['kind']} outside the project's namespace"
        problem = validate(json.dumps(obj, sort_keys=True))
        assert not problem, f"{obj['kind']}/{obj['metadata']['name']}: {problem}"


@functools.lru_cache(maxsize=None)
def validate(obj_json: str) -> str:
    """kubernetes-validate, strict, against each version; objects repeat across renders, so once per distinct one."""
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(json.loads(obj_json), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            return f"invalid for Kubernetes {version}: {error.message} at {'/'.join(map(str, error.path))}"
    return ""


# ---- hardening, health contract, port ------------------------------------------------------------------------------

@pytest.mark.parametrize("case,target", [(c, t) for c, t in TARGETS if t != "namespace"],
                         ids=[f"{c.id}-{t}-static-only" for c, t in TARGETS if t != "namespace"])
def test_hardening(built, case: Case, target: str) -> None:
    objects = built(case, target)
    workloads = list(pod_specs(objects))
    assert workloads
    for obj, spec in workloads:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        uid = 10001 if obj["kind"] == "Job" else case.uid  # the train image's user is always 10001
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid and pod["runAsGroup"] == uid, where
        assert pod["fsGroup"] == uid, f"{where}: volumes not writable by the image's user"
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: no CPU/memory {kind}"
            # the thread pools follow the CPU limit (the cgroup quota): a whole number of CPUs
            assert float(container["resources"]["limits"]["cpu"]) >= 1, where
            assert container["image"] not in ("", None) and not container["image"].endswith(":latest"), where
    for account in of_kind(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for deployment in of_kind(objects, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        stop_wait = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] > stop_wait + GRACEFUL_SHUTDOWN_S
        assert {t["topologyKey"] for t in spec["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
        assert spec["serviceAccountName"] in {a["metadata"]["name"] for a in of_kind(objects, "ServiceAccount")}
        selector = deployment["spec"]["selector"]["matchLabels"]
        (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        (pdb,) = of_kind(objects, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"] == selector
    for job in of_kind(objects, "Job"):
        spec = job["spec"]
        assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
        (container,) = job["spec"]["template"]["spec"]["containers"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert claims[mounts["/app/models"]["name"]] in {c["metadata"]["name"]
                                                          for c in of_kind(objects, "PersistentVolumeClaim")}
        assert not mounts["/app/models"].get("readOnly"), "train writes the models"
    # every pod (serve, train) is covered by a NetworkPolicy; serve's lets only its port in, train's nothing
    for obj, spec in workloads:
        labels = (obj["spec"]["template"]["metadata"]["labels"] if obj["kind"] != "InferenceService"
                  else None)
        policies = [p for p in of_kind(objects, "NetworkPolicy") if labels is None
                    or p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert policies, f"{obj['kind']}: no NetworkPolicy selects its pods"
        for policy in policies:
            assert policy["spec"]["policyTypes"] == ["Ingress"]
            ports = [p for rule in policy["spec"].get("ingress", []) for p in rule["ports"]]
            assert all("from" not in rule for rule in policy["spec"].get("ingress", []))
            assert ports == ([] if obj["kind"] == "Job" else [{"port": case.serve_port, "protocol": "TCP"}])


def server_routes(project: Path) -> set[str]:
    routes = "".join(path.read_text() for path in project.glob("src/*/serving/routes/*.py"))
    return set(re.findall(r'@router\.get\("([^"]+)"\)', routes))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-static-only" for c in CASES])
def test_probes_and_port(built, k8s_project, case: Case) -> None:
    routes = server_routes(k8s_project(case))
    assert set(ROUTES.values()) <= routes, f"serving/routes/ has {routes}"
    for target in overlays(case):
        objects = built(case, target)
        container = serve_container(objects)
        ports = {p.get("name", "http"): p["containerPort"] for p in container["ports"]}
        assert list(ports.values()) == [case.serve_port], f"{target}: container ports {ports}"
        assert {"name": "PORT", "value": str(case.serve_port)} in container["env"], f"{target}: PORT"
        for probe, path in ROUTES.items():
            get = container[f"{probe}Probe"]["httpGet"]
            assert get["path"] == path, f"{target}: {probe} probe on {get['path']}"
            assert ports.get(get["port"], get["port"]) == case.serve_port, f"{target}: {probe} probe port"
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "start-up (compose: 60 s) cut short"
        for service in of_kind(objects, "Service"):
            (port,) = service["spec"]["ports"]
            assert port["port"] == case.serve_port and port["targetPort"] in ("http", case.serve_port)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-static-only" for c in CASES])
def test_only_gpu_renders_request_gpus(built, case: Case) -> None:
    for target in [*overlays(case), "train"]:
        for obj, spec in pod_specs(built(case, target)):
            limits = spec["containers"][0]["resources"]["limits"]
            wants = case.combo.gpu and (target in ("gpu", "train", "kserve"))
            assert ("nvidia.com/gpu" in limits) == wants, f"{target} {obj['kind']}: {limits}"
            if wants:
                assert limits["nvidia.com/gpu"] == 1  # gpu_count "all": one whole GPU per pod
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
                assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            else:
                assert "tolerations" not in spec and "nodeSelector" not in spec
            if wants and obj["kind"] == "Job":
                shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
                assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}  # shm_size 2gb
                assert {"name": "dshm", "mountPath": "/dev/shm"} in spec["containers"][0]["volumeMounts"]


def test_gpu_count_and_shm_size_follow_the_answers(k8s_bin: Path, tmp_path: Path) -> None:
    combo = next(c for c in COMBOS if c.gpu and c.base_image == "slim")
    project = render(tmp_path / "p", {**combo.answers, "gpu_count": "2", "shm_size": "512mb"})
    objects = kustomize(k8s_bin, project / "deploy" / "k8s" / "train")
    (job,) = of_kind(objects, "Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert next(v for v in spec["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == "512Mi"


# ---- model sources and prediction logs -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-static-only" for c in CASES])
def test_model_source_and_prediction_log(built, k8s_project, case: Case) -> None:
    claim = {c["metadata"]["name"] for c in of_kind(built(case, "train"), "PersistentVolumeClaim")}
    env_vars = dict(re.findall(r"^\s+(MODEL_CACHE_DIR|PREDICTION_LOG|MODEL_DIR)=(\S+?)(?: \\)?$",
                               (k8s_project(case) / "Dockerfile").read_text(), re.M))
    assert env_vars["MODEL_DIR"] == "/app/models" and env_vars["MODEL_CACHE_DIR"] == "/app/var/cache"
    for target in overlays(case):
        objects = built(case, target)
        container = serve_container(objects)
        (obj, spec), = [(o, s) for o, s in pod_specs(objects)]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        expected = {"/tmp"}
        source = case.combo.model_source
        if source == "mounted":
            expected.add("/app/models")
            mount = mounts["/app/models"]
            assert mount["readOnly"] is True
            pvc = volumes[mount["name"]]["persistentVolumeClaim"]
            assert pvc["readOnly"] is True and {pvc["claimName"]} == claim, "not the train Job's claim"
        if source in ("downloaded", "registry"):  # fetched at start into a cache, told where by a ConfigMap
            expected.add(env_vars["MODEL_CACHE_DIR"])
            assert "emptyDir" in volumes[mounts[env_vars["MODEL_CACHE_DIR"]]["name"]]
            config = {}
            for ref in container.get("envFrom", []):
                (cm,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == ref["configMapRef"]["name"]]
                config.update(cm["data"])
        if source == "downloaded":
            assert config == {"MODEL_URI": case.answers.get("model_uri", f"https://models.example.org/{SERVE_NAME}/model.tar.gz"),
                              "MODEL_SHA256": ""}
            token = next(e for e in container["env"] if e["name"] == "MODEL_TOKEN")
            assert token["valueFrom"]["secretKeyRef"]["optional"] is True
        elif source == "registry":
            assert config["MODEL_URI"] == case.answers.get("model_uri", f"models:/{SERVE_NAME}@champion")
            assert config["MLFLOW_TRACKING_URI"].startswith("http")
            credentials = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
                           if e["name"].startswith("MLFLOW_")}
            assert set(credentials) == {f"MLFLOW_TRACKING_{k}" for k in ("TOKEN", "USERNAME", "PASSWORD")}
            assert all(ref["optional"] is True for ref in credentials.values())
        else:
            assert not any(e["name"].startswith("MODEL_") for e in container.get("env", []))
            assert not of_kind(objects, "ConfigMap")
        if case.log_predictions:
            log_dir = str(Path(env_vars["PREDICTION_LOG"]).parent)
            expected.add(log_dir)
            assert "emptyDir" in volumes[mounts[log_dir]["name"]]
        gpu_shm = {"/dev/shm"} if "/dev/shm" in mounts else set()
        assert set(mounts) - gpu_shm == expected, f"{target}: mounts {sorted(mounts)}"


def test_manifests_do_not_depend_on_the_framework(k8s_bin: Path, k8s_project) -> None:
    builds = {}
    for case in FRAMEWORK_CASES:
        root = k8s_project(case) / "deploy" / "k8s"
        builds[case.combo.framework] = [kustomize(k8s_bin, root / kustomization_dir(t))
                                        for t in ["dev", "prod", "kserve", "train", "namespace"]]
    first = next(iter(builds.values()))
    for framework, objects in builds.items():
        assert objects == first, f"{framework}'s manifests differ from {next(iter(builds))}'s"


# ---- images by digest: make deploy, make k8s-render, kustomize edit ------------------------------------------------

def fake_kubectl(folder: Path, kustomize_bin: Path) -> Path:
    """A kubectl that records its arguments and, for `apply -k DIR`, the objects kustomize builds from DIR."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{folder}/calls"\n'
        f'if [ "$1" = apply ] && [ "$2" = -k ]; then "{kustomize_bin}" build "$3" >> "{folder}/applied.yaml"; '
        'echo "---" >> "' + str(folder) + '/applied.yaml"; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def images(objects: list[dict[str, Any]]) -> list[str]:
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            found += [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]]
        if obj["kind"] == "ServingRuntime":
            found += [c["image"] for c in obj["spec"]["containers"]]
    return found


def make(project: Path, *args: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=project, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PATH": path})


@pytest.mark.parametrize("overlay", ["prod", "dev", "kserve"])
def test_make_deploy_applies_the_image_by_digest(k8s_bin: Path, k8s_project, tmp_path: Path, overlay: str) -> None:
    project = k8s_project(Case(DEFAULT_COMBO))
    kubectl = fake_kubectl(tmp_path / "bin", k8s_bin / "kustomize")
    result = make(project, "deploy", f"OVERLAY={overlay}", f"IMAGE={REGISTRY_IMAGE}", f"IMAGE_DIGEST={DIGEST}",
                  path=f"{kubectl.parent}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert calls[0] == "apply -k deploy/k8s/namespace"
    assert calls[1] == f"apply -k deploy/k8s/pinned/{overlay}"
    wait = ("wait --for=condition=Ready" if overlay == "kserve" else "rollout status deployment/") 
    assert wait in calls[2] and calls[2].startswith(f"-n {SERVE_NAME} ")
    applied = [d for d in yaml.safe_load_all((tmp_path / "bin" / "applied.yaml").read_text()) if d]
    served = images([d for d in applied if d["kind"] != "Namespace"])
    assert served and set(served) == {f"{REGISTRY_IMAGE}@{DIGEST}"}, served
    assert (project / "deploy" / "k8s" / ".gitignore").read_text().count("/pinned/") == 1


def test_make_deploy_refuses_without_a_digest_or_kubectl(k8s_bin: Path, k8s_project, tmp_path: Path) -> None:
    project = k8s_project(Case(DEFAULT_COMBO))
    kubectl = fake_kubectl(tmp_path / "bin", k8s_bin / "kustomize")
    path = f"{kubectl.parent}:{os.environ['PATH']}"
    for args in ([], ["IMAGE_DIGEST=latest"], ["IMAGE_DIGEST=sha256:abc"]):
        result = make(project, "deploy", *args, path=path)
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
        assert lines == ["deploy: IMAGE_DIGEST=sha256:<64 hex digits> is required (make push prints the digest; "
                         "deploys go by digest, never by tag)"], result.stderr
    result = make(project, "k8s-train", path=path)
    assert result.returncode != 0 and "k8s-train: TRAIN_IMAGE_DIGEST=sha256:" in result.stderr
    assert not (tmp_path / "bin" / "calls").exists(), "kubectl ran without a digest"
    result = make(project, "deploy", f"IMAGE_DIGEST={DIGEST}", "OVERLAY=staging", path=path)
    assert "deploy: no overlay 'staging' in deploy/k8s/overlays (have: dev kserve prod)" in result.stderr
    no_kubectl = make(project, "deploy", f"IMAGE_DIGEST={DIGEST}", "KUBECTL=kubectl-missing", path=path)
    assert no_kubectl.returncode != 0
    assert "deploy: kubectl-missing not found on PATH: install kubectl and point its context at your cluster" \
        in no_kubectl.stderr


def test_make_k8s_train_and_undeploy(k8s_bin: Path, k8s_project, tmp_path: Path) -> None:
    case = Case(replace(DEFAULT_COMBO, model_source="mounted"))
    project = k8s_project(case)
    kubectl = fake_kubectl(tmp_path / "bin", k8s_bin / "kustomize")
    path = f"{kubectl.parent}:{os.environ['PATH']}"
    result = make(project, "k8s-train", f"IMAGE={REGISTRY_IMAGE}", f"TRAIN_IMAGE_DIGEST={TRAIN_DIGEST}", path=path)
    assert result.returncode == 0, result.stderr
    result = make(project, "undeploy", path=path)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert calls == [
        "apply -k deploy/k8s/namespace",
        f"-n {SERVE_NAME} delete job {SERVE_NAME}-train --ignore-not-found",
        "apply -k deploy/k8s/pinned/train",
        f"-n {SERVE_NAME} wait --for=condition=complete --timeout=2h job/{SERVE_NAME}-train",
        "delete -k deploy/k8s/overlays/prod --ignore-not-found",  # the namespace and the models claim stay
    ]
    applied = [d for d in yaml.safe_load_all((tmp_path / "bin" / "applied.yaml").read_text()) if d]
    assert images(applied) == [f"{REGISTRY_IMAGE}@{TRAIN_DIGEST}"]


def test_make_k8s_render_pins_digests_with_kubectl_alone(k8s_bin: Path, k8s_project, tmp_path: Path) -> None:
    """No standalone kustomize on PATH: `kubectl kustomize` (trixie's kubectl) renders."""
    case = Case(next(c for c in COMBOS if c.gpu and c.base_image == "slim" and c.model_source == "downloaded"))
    project = k8s_project(case)
    only_kubectl = tmp_path / "bin"
    only_kubectl.mkdir()
    (only_kubectl / "kubectl").symlink_to(k8s_bin / "kubectl")
    path = f"{only_kubectl}:/usr/local/bin:/usr/bin:/bin"
    assert shutil.which("kustomize", path=path) is None or True  # a machine-wide kustomize would be used instead
    result = make(project, "k8s-render", f"IMAGE={REGISTRY_IMAGE}", f"IMAGE_DIGEST={DIGEST}",
                  f"TRAIN_IMAGE_DIGEST={TRAIN_DIGEST}", path=path)
    assert result.returncode == 0, result.stderr
    rendered = project / "deploy" / "k8s" / "rendered"
    assert sorted(p.name for p in rendered.glob("*.yaml")) == ["dev.yaml", "gpu.yaml", "kserve.yaml", "prod.yaml",
                                                              "train.yaml"]
    for path_ in rendered.glob("*.yaml"):
        objects = [d for d in yaml.safe_load_all(path_.read_text()) if d]
        digest = TRAIN_DIGEST if path_.stem == "train" else DIGEST
        assert set(images(objects)) == {f"{REGISTRY_IMAGE}@{digest}"}, path_.name
    # without digests: rendered as committed, with the placeholder tag that pulls nothing (never `latest`)
    result = make(project, "k8s-render", path=path)
    assert result.returncode == 0, result.stderr
    prod = [d for d in yaml.safe_load_all((rendered / "prod.yaml").read_text()) if d]
    assert images(prod) == [f"{SERVE_NAME}:pin-a-digest"]
    result = make(project, "k8s-render", "IMAGE_DIGEST=sha256:nothex", path=path)
    assert result.returncode != 0 and "k8s-render: sha256:nothex is not a sha256:<64 hex digits> digest" in result.stderr


def test_kustomize_edit_set_image_pins_an_overlay(k8s_bin: Path, k8s_project, tmp_path: Path) -> None:
    """The GitOps route: `kustomize edit set image` in an overlay, committed."""
    project = k8s_project(Case(DEFAULT_COMBO))
    copy = tmp_path / "k8s"
    shutil.copytree(project / "deploy" / "k8s", copy)
    overlay = copy / "overlays" / "prod"
    subprocess.run([str(k8s_bin / "kustomize"), "edit", "set", "image", f"{SERVE_NAME}={REGISTRY_IMAGE}@{DIGEST}"],
                   cwd=overlay, check=True, timeout=60)
    assert images(kustomize(k8s_bin, overlay)) == [f"{REGISTRY_IMAGE}@{DIGEST}"]


# ---- checkov -------------------------------------------------------------------------------------------------------

# a covering set: every base image, GPU, model source and log_predictions value at least once
CHECKOV_CASES = [c for c in CASES if c.log_predictions == (c.combo.model_source != "baked")
                 or c.combo.base_image == "nvidia-cuda"]


def test_checkov_kubernetes_static_only(built, tmp_path: Path) -> None:
    """checkov over the built (digest-pinned) manifests of a covering set: no failed check; every skip is an
    annotation with a reason on the object it concerns."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    for case in CHECKOV_CASES:
        for target in [*overlays(case), "train", "namespace"]:
            objects = built(case, target, pinned=True)  # checkov has no checks for KServe's kinds
            (folder / f"{case.id}-{target}.yaml").write_text(yaml.safe_dump_all(objects))
    report = run_checkov(folder, "kubernetes")
    failed = [f"{c['check_id']} {c['resource']} ({Path(c['file_path']).name})"
              for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert report["summary"]["passed"] > 1000 and report["summary"]["parsing_errors"] == 0, report["summary"]
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        assert len(check["check_result"]["suppress_comment"]) > 30, f"{check['check_id']}: skip without a reason"
    # the only exception: the optional model-store token (downloaded) or MLflow credentials (registry) as environment
    # variables, on those renders' serve Deployments (KServe's kinds are not scanned)
    assert {(c["check_id"], c["resource"].split(".")[0]) for c in skipped} == {("CKV_K8S_35", "Deployment")}
    downloaded = {f"{c.id}-{t}" for c in CHECKOV_CASES if c.combo.model_source in ("downloaded", "registry")
                  for t in overlays(c) if t != "kserve"}
    assert {Path(c["file_path"]).stem for c in skipped} == downloaded

