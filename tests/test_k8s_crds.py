"""Validate the ray.io manifests in k8s/ against KubeRay's CRD schemas (offline, no Ray).

The KubeRay part of each schema is vendored in k8s/crds/kuberay-*/ (see SOURCE.md there);
the Kubernetes core types it embeds (PodTemplateSpec, Service, EnvVar, ...) are referenced as
``{"$ref": "k8s:<file-stem>"}`` and resolved from the JSON Schemas shipped by the
kubernetes-validate package (strict variant: unknown fields are rejected). Objects of the
KubeRay part get ``additionalProperties: false`` here, so a misspelled field fails anywhere,
as ``kubectl apply --validate=strict`` would reject it.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "k8s"
CRD_DIRS = sorted(p for p in (K8S_DIR / "crds").glob("kuberay-*") if p.is_dir())
assert len(CRD_DIRS) == 1, f"expected one vendored KubeRay schema folder, found {CRD_DIRS}"
CRD_DIR = CRD_DIRS[0]

# Kubernetes version of the core-type schemas, named in SOURCE.md ("Kubernetes schema: v1.NN.0").
_K8S_VERSION = re.search(r"kubernetes-validate folder: `(v1\.\d+\.0-local-strict)`", (CRD_DIR / "SOURCE.md").read_text())
assert _K8S_VERSION, "SOURCE.md must name the kubernetes-validate folder it was made against"
K8S_FOLDER = _K8S_VERSION.group(1)
K8S_SCHEMAS = resources.files("kubernetes_validate") / "kubernetes-json-schema" / K8S_FOLDER

KINDS = {"RayJob": "rayjob.json", "RayService": "rayservice.json", "RayCronJob": "raycronjob.json",
         "RayCluster": "raycluster.json"}
BASE = "https://stocktrend.invalid/kuberay/"


def _k8s_file(stem: str) -> dict:
    return json.loads((K8S_SCHEMAS / f"{stem}.json").read_text())


def _walk(node, fn):
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk(v, fn)


def _k8s_refs(node) -> set[str]:
    found: set[str] = set()

    def visit(d):
        ref = d.get("$ref")
        if isinstance(ref, str) and ref.startswith("k8s:"):
            found.add(ref[4:])

    _walk(node, visit)
    return found


def _strict_kuberay(schema: dict) -> dict:
    """Copy of a vendored schema with k8s: refs pointed at kubernetes-validate's $ids and
    additionalProperties: false on every KubeRay object that lists its properties."""
    schema = copy.deepcopy(schema)

    def visit(d):
        ref = d.get("$ref")
        if isinstance(ref, str) and ref.startswith("k8s:"):
            d["$ref"] = _k8s_file(ref[4:])["$id"]
        if ("properties" in d and "additionalProperties" not in d
                and not d.get("x-kubernetes-preserve-unknown-fields")):
            d["additionalProperties"] = False

    _walk(schema, visit)
    return schema


def _registry() -> Registry:
    pairs = []
    for name in KINDS.values():
        contents = _strict_kuberay(json.loads((CRD_DIR / name).read_text()))
        pairs.append((BASE + name, Resource(contents=contents, specification=DRAFT202012)))
    stems = {"_definitions", "objectmeta-meta-v1"}
    for name in KINDS.values():
        stems |= _k8s_refs(json.loads((CRD_DIR / name).read_text()))
    for stem in stems:
        contents = _k8s_file(stem)
        pairs.append((contents["$id"], Resource(contents=contents, specification=DRAFT202012)))
    return Registry().with_resources(pairs)


REGISTRY = _registry()
OBJECTMETA_ID = _k8s_file("objectmeta-meta-v1")["$id"]


def errors_for(doc: dict) -> list[str]:
    """All schema errors for one ray.io manifest ("path: message")."""
    kind = doc.get("kind")
    if kind not in KINDS:
        return [f"kind {kind!r} has no vendored KubeRay schema"]
    out = []
    for schema_ref, instance, prefix in (
        ({"$ref": BASE + KINDS[kind]}, doc, ""),
        # the API server validates metadata as ObjectMeta whatever the CRD says
        ({"$ref": OBJECTMETA_ID}, doc.get("metadata", {}), "metadata."),
    ):
        validator = jsonschema.Draft202012Validator(schema_ref, registry=REGISTRY)
        for err in validator.iter_errors(instance):
            path = prefix + ".".join(str(p) for p in err.absolute_path)
            out.append(f"{path or '<root>'}: {err.message}")
    return out


def _ray_manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/"):
                found.append((f"{path.name}:{doc['kind']}", doc))
    return found


MANIFESTS = _ray_manifests()


def _manifest(kind: str) -> dict:
    for _, doc in MANIFESTS:
        if doc["kind"] == kind:
            return copy.deepcopy(doc)
    raise LookupError(kind)


def test_manifests_found():
    assert {doc["kind"] for _, doc in MANIFESTS} >= {"RayJob", "RayService", "RayCronJob"}


@pytest.mark.parametrize("name,doc", MANIFESTS, ids=[n for n, _ in MANIFESTS])
def test_manifest_validates_against_kuberay_crd(name, doc):
    assert errors_for(doc) == []


def _set(doc, dotted: str, value):
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _rename(doc, dotted: str, new_key: str):
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[new_key] = node.pop(keys[-1])


MUTATIONS = [
    # (kind, description, mutate(doc), substring expected in one error)
    ("RayJob", "typo: spec.rayClusterSpec.headGroupSpec.rayStartParamz",
     lambda d: _rename(d, "spec.rayClusterSpec.headGroupSpec.rayStartParams", "rayStartParamz"), "rayStartParamz"),
    ("RayJob", "typo: imagePullPolicyy in a worker container",
     lambda d: _set(d, "spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0.imagePullPolicyy",
                    "IfNotPresent"), "imagePullPolicyy"),
    ("RayJob", "typo: spec.shutdownAfterJobFinish",
     lambda d: _rename(d, "spec.shutdownAfterJobFinishes", "shutdownAfterJobFinish"), "shutdownAfterJobFinish"),
    ("RayJob", "typo: spec.rayClusterSpec.workerGroupSpecs[0].minReplica",
     lambda d: _rename(d, "spec.rayClusterSpec.workerGroupSpecs.0.minReplicas", "minReplica"), "minReplica"),
    ("RayJob", "typo in the submitter pod spec: restartPolicyy",
     lambda d: _rename(d, "spec.submitterPodTemplate.spec.restartPolicy", "restartPolicyy"), "restartPolicyy"),
    ("RayJob", "typo in the head volume: persistentVolumeClam",
     lambda d: _rename(d, "spec.rayClusterSpec.headGroupSpec.template.spec.volumes.0.persistentVolumeClaim",
                       "persistentVolumeClam"), "persistentVolumeClam"),
    ("RayJob", "wrong type: workerGroupSpecs[0].replicas: 'two'",
     lambda d: _set(d, "spec.rayClusterSpec.workerGroupSpecs.0.replicas", "two"), "'two'"),
    ("RayJob", "wrong type: ttlSecondsAfterFinished: '1h'",
     lambda d: _set(d, "spec.ttlSecondsAfterFinished", "1h"), "'1h'"),
    ("RayJob", "wrong enum: autoscalerOptions.upscalingMode: Fast",
     lambda d: _set(d, "spec.rayClusterSpec.autoscalerOptions", {"upscalingMode": "Fast"}), "'Fast'"),
    ("RayJob", "wrong enum: deletionStrategy.onSuccess.policy: DeleteAll",
     lambda d: _set(d, "spec.deletionStrategy", {"onSuccess": {"policy": "DeleteAll"},
                                                 "onFailure": {"policy": "DeleteNone"}}), "'DeleteAll'"),
    ("RayJob", "missing required: workerGroupSpecs[0].groupName",
     lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"), "'groupName' is a required"),
    ("RayJob", "wrong type in a core type: containerPort: 'gcs'",
     lambda d: _set(d, "spec.rayClusterSpec.headGroupSpec.template.spec.containers.0.ports.0.containerPort",
                    "gcs"), "'gcs'"),
    ("RayService", "typo: spec.rayClusterConfig.headGroupSpec.rayStartParamz",
     lambda d: _rename(d, "spec.rayClusterConfig.headGroupSpec.rayStartParams", "rayStartParamz"), "rayStartParamz"),
    ("RayService", "typo: spec.serveConfigv2",
     lambda d: _rename(d, "spec.serveConfigV2", "serveConfigv2"), "serveConfigv2"),
    ("RayService", "wrong type: workerGroupSpecs[0].maxReplicas: 'two'",
     lambda d: _set(d, "spec.rayClusterConfig.workerGroupSpecs.0.maxReplicas", "two"), "'two'"),
    ("RayService", "wrong enum: upgradeStrategy in the cluster spec: Rolling",
     lambda d: _set(d, "spec.rayClusterConfig.upgradeStrategy", {"type": "Rolling"}), "'Rolling'"),
    ("RayService", "typo in a head container port: containerPortt",
     lambda d: _rename(d, "spec.rayClusterConfig.headGroupSpec.template.spec.containers.0.ports.0.containerPort",
                       "containerPortt"), "containerPortt"),
    ("RayCronJob", "typo: spec.jobTemplate.rayClusterSpec.headGroupSpec.rayStartParamz",
     lambda d: _rename(d, "spec.jobTemplate.rayClusterSpec.headGroupSpec.rayStartParams", "rayStartParamz"),
     "rayStartParamz"),
    ("RayCronJob", "typo: spec.shedule",
     lambda d: _rename(d, "spec.schedule", "shedule"), "shedule"),
    ("RayCronJob", "typo: spec.jobTemplate.shutdownAfterJobFinish",
     lambda d: _rename(d, "spec.jobTemplate.shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
     "shutdownAfterJobFinish"),
    ("RayCronJob", "wrong type: spec.suspend: 'yes'",
     lambda d: _set(d, "spec.suspend", "yes"), "'yes'"),
]


@pytest.mark.parametrize("kind,what,mutate,expected", MUTATIONS, ids=[m[1] for m in MUTATIONS])
def test_wrong_field_fails(kind, what, mutate, expected):
    doc = _manifest(kind)
    assert errors_for(doc) == []
    mutate(doc)
    errors = errors_for(doc)
    assert errors, f"{what}: accepted"
    assert any(expected in e for e in errors), errors


def test_unknown_top_level_and_metadata_fields_fail():
    doc = _manifest("RayJob")
    doc["spec_"] = {}
    doc["metadata"]["lables"] = {}
    errors = errors_for(doc)
    assert any("spec_" in e for e in errors), errors
    assert any("lables" in e for e in errors), errors


def test_every_k8s_ref_resolves_to_a_kubernetes_validate_file():
    stems = set()
    for name in KINDS.values():
        stems |= _k8s_refs(json.loads((CRD_DIR / name).read_text()))
    assert stems, "no k8s: refs found"
    for stem in sorted(stems):
        schema = _k8s_file(stem)  # raises if the file is missing
        assert schema.get("additionalProperties") is False, f"{stem}: not the strict variant"
        # and the whole subtree resolves (follow every $ref once)
        resolver = REGISTRY.resolver(base_uri=schema["$id"])

        def visit(d, resolver=resolver):
            ref = d.get("$ref")
            if isinstance(ref, str):
                resolver.lookup(ref)

        _walk(schema, visit)


def test_vendored_schemas_are_self_consistent():
    for name in KINDS.values():
        schema = json.loads((CRD_DIR / name).read_text())
        jsonschema.Draft202012Validator.check_schema(_strict_kuberay(schema))
        source = schema["x-kuberay-source"]
        assert source["group"] == "ray.io" and source["version"] == "v1"
        assert KINDS[source["kind"]] == name
    # the specs that embed RayClusterSpec / RayJobSpec reference the single transcription
    job = json.loads((CRD_DIR / "rayjob.json").read_text())
    assert job["definitions"]["RayJobSpec"]["properties"]["rayClusterSpec"] == {
        "$ref": "raycluster.json#/definitions/RayClusterSpec"}
    svc = json.loads((CRD_DIR / "rayservice.json").read_text())
    assert svc["definitions"]["RayServiceSpec"]["properties"]["rayClusterConfig"] == {
        "$ref": "raycluster.json#/definitions/RayClusterSpec"}


def test_vendored_folder_names_version_commit_and_licence():
    source = (CRD_DIR / "SOURCE.md").read_text()
    for needle in ("ray-project/kuberay", "12cb11e48d1a375a19b771ec53c3b0023d189d4e",
                   "ray-operator/config/crd/bases/ray.io_raycronjobs.yaml", "Apache-2.0",
                   "kubernetes-validate==1.37.0", K8S_FOLDER):
        assert needle in source, needle
    assert "12cb11e" in CRD_DIR.name
    licence = (CRD_DIR / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
