"""Offline validation of Kubernetes manifests, as strict as the API server and the KubeRay operator.

RayJob / RayCluster: the CRD's openAPIV3Schema (KubeRay v1.7.0, from ../shared/kuberay-crds) with
unknown fields rejected, plus the operator's own rules the schema cannot express. Pod templates and
core objects: the Kubernetes schemas shipped by `kubernetes-validate`, strict mode.
"""
from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
K8S_VERSION = "1.31"


def strict(schema: dict) -> dict:
    """A copy of `schema` where every object that lists its properties rejects any other property."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


@cache
def crd_validator(kind: str) -> jsonschema.Validator:
    """A strict validator of `kind` (RayJob or RayCluster) at ray.io/v1."""
    path = CRD_DIR / CRD_FILES[kind]
    if not path.is_file():
        pytest.fail(f"KubeRay CRD {path} not found: the tests read the CRDs from shared/kuberay-crds "
                    f"beside the repository clone ({CRD_DIR})")
    crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)  # 1-2 MB each: the C loader is 10x faster
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def schema_errors(doc: dict) -> list[str]:
    """Where `doc` breaks its CRD's schema (empty when valid)."""
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in crd_validator(doc["kind"]).iter_errors(doc)]


def cluster_spec(doc: dict) -> dict | None:
    """The RayClusterSpec of a RayCluster or of a RayJob that creates its own cluster."""
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"].get("rayClusterSpec")


def operator_errors(doc: dict) -> list[str]:
    """Rules the KubeRay operator enforces beyond the schema."""
    errors = []
    if doc["kind"] == "RayJob" and not (doc["spec"].get("rayClusterSpec") or doc["spec"].get("clusterSelector")):
        errors.append("spec: a RayJob needs rayClusterSpec or clusterSelector")
    spec = cluster_spec(doc) or {}
    names = [g.get("groupName") for g in spec.get("workerGroupSpecs", [])]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"workerGroupSpecs: group name {name!r} is used more than once")
    for g in spec.get("workerGroupSpecs", []):
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1)
        replicas = g.get("replicas", lo)
        if not lo <= replicas <= hi:
            errors.append(f"workerGroupSpecs[{g.get('groupName')}]: needs minReplicas ({lo}) <= replicas "
                          f"({replicas}) <= maxReplicas ({hi})")
    return errors


def pod_templates(doc: dict) -> dict[str, dict]:
    """Every pod template of a RayJob / RayCluster, by where it sits."""
    templates = {}
    spec = cluster_spec(doc)
    if spec:
        templates["head"] = spec["headGroupSpec"]["template"]
        for g in spec.get("workerGroupSpecs", []):
            templates[f"worker group {g['groupName']}"] = g["template"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        templates["submitter"] = doc["spec"]["submitterPodTemplate"]
    return templates


def k8s_errors(obj: dict) -> list[str]:
    """Where a core Kubernetes object breaks the official schema (strict: no unknown fields)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    return []


def pod_template_errors(template: dict) -> list[str]:
    """Where a pod template breaks the core PodTemplateSpec schema."""
    return k8s_errors({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                       "template": template})


def all_errors(doc: dict) -> list[str]:
    """Every problem of one manifest document, whatever its kind."""
    if doc["kind"] in CRD_FILES:
        return schema_errors(doc) + operator_errors(doc) + [
            f"{where}: {err}" for where, t in pod_templates(doc).items() for err in pod_template_errors(t)]
    return k8s_errors(doc)
