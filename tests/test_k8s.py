"""k8s/: the KubeRay manifests, checked without a Kubernetes cluster (none exists here); their
validation against KubeRay's CRD schemas is tests/test_k8s_crds.py. What is checked here is
what ties them to this project: the RayService's Serve config loads through
``ServeArgs`` with serve/config.yaml's builder arguments; every entry point and its flags parse
with the script's own argument parser; every Ray container runs the project's image with
token authentication from one Secret and the shared volume; the GPU worker group holds the
trials the search asks for; the Ray version is the pinned one."""

from __future__ import annotations

import importlib
import math
import shlex
from pathlib import Path

import pytest
import yaml

from stocktrend.cluster.head import SERVE_ENV
from stocktrend.serving.config import ServeArgs

K8S = Path(__file__).resolve().parents[1] / "k8s"
RAY_KINDS = ("RayJob", "RayService", "RayCronJob")
SECRET = {"name": "stocktrend-ray-token", "key": "auth_token"}


def manifests() -> dict[str, dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[f"{path.name}:{doc['kind']}"] = doc
    return out


def cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayJob": lambda: spec["rayClusterSpec"], "RayService": lambda: spec["rayClusterConfig"],
            "RayCronJob": lambda: spec["jobTemplate"]["rayClusterSpec"]}[doc["kind"]]()


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    cluster = cluster_spec(doc)
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster.get("workerGroupSpecs", [])]
    job = doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]
    if "submitterPodTemplate" in job:
        pods.append(("submitter", job["submitterPodTemplate"]["spec"]))
    return pods


def container_problems(doc: dict) -> list[str]:
    """What is wrong with the Ray containers of one manifest (empty: nothing)."""
    problems = []
    for group, pod in pod_specs(doc):
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            where = f"{doc['metadata']['name']}/{group}/{c['name']}"
            env = {e["name"]: e for e in c.get("env", [])}
            if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
                problems.append(f"{where}: RAY_AUTH_MODE is not 'token'")
            if env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") != SECRET:
                problems.append(f"{where}: RAY_AUTH_TOKEN does not come from the Secret {SECRET}")
            if c.get("image") not in ("stocktrend:cpu", "stocktrend:cuda"):
                problems.append(f"{where}: image {c.get('image')!r} is not the project's")
            if group == "submitter":
                continue
            if c.get("workingDir") != "/opt/stocktrend":
                problems.append(f"{where}: workingDir is not the image's project folder")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if claims.get(mounts.get("/shared")) != "stocktrend-shared":
                problems.append(f"{where}: /shared is not the claim stocktrend-shared")
            gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            if (c["image"] == "stocktrend:cuda") != bool(gpus):
                problems.append(f"{where}: the CUDA image goes with GPU limits, and only there")
    return problems


def entrypoint(doc: dict) -> list[str]:
    job = doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]
    return shlex.split(job["entrypoint"])


def test_every_manifest_is_a_ray_resource_of_the_pinned_version():
    import ray

    found = manifests()
    assert {d["kind"] for d in found.values()} >= {*RAY_KINDS, "PersistentVolumeClaim"}
    for name, doc in found.items():
        if doc["kind"] in RAY_KINDS:
            assert doc["apiVersion"] == "ray.io/v1", name
            assert cluster_spec(doc)["rayVersion"] == ray.__version__, name
    (claim,) = [d for d in found.values() if d["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "stocktrend-shared" and "ReadWriteMany" in claim["spec"]["accessModes"]


def test_every_ray_container_has_the_token_the_image_and_the_shared_volume():
    for name, doc in manifests().items():
        if doc["kind"] in RAY_KINDS:
            assert container_problems(doc) == [], name


def test_the_container_check_can_fail():
    doc = manifests()["rayjob-tune.yaml:RayJob"]
    head = cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = [e for e in head["env"] if e["name"] != "RAY_AUTH_TOKEN"]
    head["image"] = "rayproject/ray:2.60.0"
    problems = container_problems(doc)
    assert any("RAY_AUTH_TOKEN" in p for p in problems) and any("image" in p for p in problems)


def test_the_rayservice_serves_serve_config_yaml_applications(repo_root):
    doc = manifests()["rayservice.yaml:RayService"]
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ours = yaml.safe_load((repo_root / "serve" / "config.yaml").read_text())
    assert served["http_options"]["host"] == "0.0.0.0" and served["http_options"]["port"] == 8000  # the pod's IP
    by_name = {a["name"]: a for a in ours["applications"]}
    for app in served["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        args = ServeArgs(**app["args"])  # the typed builder arguments: a wrong field fails here
        mine = by_name[app["name"]]
        assert app["import_path"] == mine["import_path"] and app["route_prefix"] == mine["route_prefix"]
        expected = {k: v for k, v in mine["args"].items() if k != "model"}
        assert {k: v for k, v in app["args"].items() if k != "model"} == expected
        assert args.model.startswith("/shared/models/")
    with pytest.raises(ValueError, match="max_batch_sizes"):
        ServeArgs(**{**served["applications"][0]["args"], "max_batch_sizes": 8})


@pytest.mark.parametrize("name", ["rayjob-tune.yaml:RayJob", "raycronjob-retrain.yaml:RayCronJob"])
def test_entrypoints_name_scripts_whose_parsers_take_their_flags(name, repo_root):
    from conftest import load_job

    words = entrypoint(manifests()[name])
    assert words[0] == "python" and (repo_root / words[1]).is_file()
    args = load_job(Path(words[1]).stem).parse_args(words[2:])  # argparse exits on an unknown flag
    for flag in ("storage_path", "cache_root", "models", "model", "data_root"):  # what a pod writes or shares
        if getattr(args, flag, None) is not None:
            assert str(getattr(args, flag)).startswith("/shared/"), (flag, getattr(args, flag))
    for value in vars(args).values():  # files the job reads from the image exist there
        if isinstance(value, str) and value.startswith(("search_spaces/", "datasets/", "serve/")):
            assert (repo_root / value).is_file(), value


def test_the_gpu_group_holds_the_trials_the_search_asks_for(repo_root):
    from conftest import load_job

    doc = manifests()["rayjob-tune.yaml:RayJob"]
    args = load_job("tune").parse_args(entrypoint(doc)[2:])
    space = yaml.safe_load((repo_root / args.space).read_text())
    trials = args.max_concurrent or space["max_concurrent"]
    (gpu,) = [g for g in cluster_spec(doc)["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    per_node = int(limits["nvidia.com/gpu"])
    assert gpu["maxReplicas"] * per_node >= math.ceil(trials * args.gpus_per_trial)
    trials_per_node = min(trials, int(per_node / args.gpus_per_trial))
    assert float(limits["cpu"]) >= trials_per_node * args.cpus_per_trial  # each trial's training worker


# -- the service locked down (issue 32) -------------------------------------------------------
API_KEY = {"name": "stocktrend-api-key", "key": "key"}


def test_the_rayservice_needs_its_key_from_a_secret_and_runs_unprivileged_with_haproxy():
    doc = manifests()["rayservice.yaml:RayService"]
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert served["http_options"]["host"] not in ("127.0.0.1", "localhost")  # so the key is required
    for app in served["applications"]:
        args = ServeArgs(**app["args"])
        assert args.require_api_key in (None, True)  # never switched off
        assert "runtime_env" not in app or args.api_key_env not in str(app["runtime_env"])  # not shown
    cluster = cluster_spec(doc)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group, pod in pod_specs(doc):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        for c in pod["containers"]:
            env = {e["name"]: e for e in c["env"]}
            assert env["STOCKTREND_API_KEY"]["valueFrom"]["secretKeyRef"] == API_KEY, group
            assert {k: env[k]["value"] for k in SERVE_ENV if k in env} == SERVE_ENV, group
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    labels = {pod_labels for pod_labels in (g["template"]["metadata"]["labels"]["app.kubernetes.io/name"] for g in
                                            [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]])}
    policy = manifests()["networkpolicy.yaml:NetworkPolicy"]
    assert labels == {policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]}
    serve_port = [rule for rule in policy["spec"]["ingress"] if {"protocol": "TCP", "port": 8000} in rule.get("ports", [])]
    assert serve_port and all("podSelector" in peer for rule in serve_port for peer in rule["from"])


def test_the_image_and_the_launcher_run_serve_as_the_project_does(repo_root):
    """Behind HAProxy, in throughput-optimized mode: the settings the tests and benchmarks run."""
    settings = [f"{k}={v}" for k, v in SERVE_ENV.items()]
    dockerfile = (repo_root / "docker" / "Dockerfile").read_text()
    assert all(s in dockerfile for s in settings)
    cluster = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(s in c for c in starts for s in settings)


@pytest.mark.parametrize("name", [n for n, d in manifests().items() if not d["apiVersion"].startswith("ray.io/")])
def test_kubernetes_core_manifests_validate_strictly(name):
    """What kubectl apply --validate=strict checks, against kubernetes-validate's schemas of
    the version the vendored KubeRay schemas were made against."""
    import kubernetes_validate

    doc = manifests()[name]
    kubernetes_validate.validate(doc, "1.34.0", strict=True)
    broken = {**doc, "spec": {**doc["spec"], "podSelectorr": {}}} if "spec" in doc else {**doc, "rulez": []}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.34.0", strict=True)
