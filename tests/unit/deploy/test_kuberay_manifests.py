"""deploy/kuberay: every manifest valid against the KubeRay CRDs and Kubernetes schemas (unknown fields
rejected) and the operator's rules; the validator rejects broken copies; the manifests agree with the
config schema, the metrics port, the critic service and each other; no secret is written down."""
import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from medpo_ray.config import CriticConfig, load_config
from tests.unit.deploy.kuberay_validate import (
    REPO,
    all_errors,
    cluster_spec,
    k8s_errors,
    operator_errors,
    pod_template_errors,
    pod_templates,
    schema_errors,
)

pytestmark = pytest.mark.unit

KUBERAY = REPO / "deploy/kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml")) + sorted(KUBERAY.glob("templates/*.yaml"))
SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.I)


def load(name: str) -> list[dict]:
    """The documents of deploy/kuberay/<name>."""
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def one(name: str, kind: str) -> dict:
    """The single document of `kind` in deploy/kuberay/<name>."""
    [doc] = [d for d in load(name) if d["kind"] == kind]
    return doc


def ray_docs() -> list[dict]:
    """Every RayJob / RayCluster shipped."""
    return [d for p in MANIFESTS for d in load(p.relative_to(KUBERAY).as_posix())
            if d["kind"] in ("RayJob", "RayCluster")]


def containers(template: dict) -> list[dict]:
    """The containers of a pod template."""
    return template["spec"]["containers"]


def train_command(job: dict) -> tuple[Path, list[str]]:
    """(config path in the repository, --set overrides) of a RayJob's `medpo-ray train` entrypoint."""
    cd, _, command = job["spec"]["entrypoint"].partition("&&")
    assert cd.split() == ["cd", "/app"], "the entrypoint must start in the image's WORKDIR"
    argv = shlex.split(command)
    assert argv[:2] == ["medpo-ray", "train"] and argv[2] == "--config", argv
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert len(argv) == 4 + 2 * len(overrides), f"unexpected arguments in {argv}"
    return REPO / argv[3], overrides


def overrides_of(job: dict) -> dict[str, str]:
    """A RayJob's --set overrides as key -> raw value."""
    return dict(o.split("=", 1) for o in train_command(job)[1])


# ---- every shipped manifest is valid ---------------------------------------------------------------

@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path):
    docs = load(path.relative_to(KUBERAY).as_posix())
    assert docs
    for doc in docs:
        if doc["kind"] == "PodMonitor":  # a Prometheus Operator CRD: checked against our pods below
            continue
        assert all_errors(doc) == [], f"{path.name} {doc['kind']}"


def test_the_recipes_are_all_there():
    assert cluster_spec(one("rayjob-cpu-demo.yaml", "RayJob"))  # creates its own cluster
    gpu_job, gpu_cluster = one("rayjob-gpu.yaml", "RayJob"), one("raycluster-gpu.yaml", "RayCluster")
    assert gpu_job["spec"]["clusterSelector"] == {"ray.io/cluster": gpu_cluster["metadata"]["name"]}
    groups = {g["groupName"] for g in gpu_cluster["spec"]["workerGroupSpecs"]}
    assert {"rollout", "learner"} <= groups
    assert {d["kind"] for d in load("critic-vllm.yaml")} == {"Deployment", "Service", "NetworkPolicy"}
    assert one("podmonitor.yaml", "PodMonitor")["apiVersion"] == "monitoring.coreos.com/v1"
    assert (REPO / "deploy/docker/Dockerfile.cpu").is_file() and (REPO / "deploy/docker/Dockerfile.gpu").is_file()


# ---- the validator rejects what the API server / operator would ------------------------------------

def broken(name: str, kind: str, edit) -> dict:
    """A copy of a shipped manifest with `edit` applied to it."""
    doc = copy.deepcopy(one(name, kind))
    edit(doc)
    return doc


def test_a_misspelled_field_is_rejected_at_every_level():
    def job_field(d):
        d["spec"]["shutdownAfterJobFinish"] = d["spec"].pop("shutdownAfterJobFinishes")

    def group_field(d):
        d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplica"] = 1

    def container_field(d):
        containers(d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"])[0]["imagePullPolcy"] = "Always"

    for edit, field in [(job_field, "shutdownAfterJobFinish"), (group_field, "minReplica"),
                        (container_field, "imagePullPolcy")]:
        errors = schema_errors(broken("rayjob-cpu-demo.yaml", "RayJob", edit))
        assert any(f"'{field}' was unexpected" in e for e in errors), (field, errors)
    # kubernetes-validate, checking the pod template on its own, catches it as well.
    template = broken("rayjob-cpu-demo.yaml", "RayJob", container_field)["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert any("'imagePullPolcy' was unexpected" in e for e in pod_template_errors(template["template"]))
    deployment = broken("critic-vllm.yaml", "Deployment", lambda d: d["spec"].update(replica=2))
    assert any("'replica' was unexpected" in e for e in k8s_errors(deployment))


def test_int_or_string_quantities_take_ints_and_strings_only():
    def limits(value):
        def edit(d):
            containers(d["spec"]["headGroupSpec"]["template"])[0]["resources"]["limits"]["cpu"] = value
        return broken("raycluster-gpu.yaml", "RayCluster", edit)

    assert schema_errors(limits(8)) == [] and schema_errors(limits("7500m")) == []
    assert schema_errors(limits([8])) and schema_errors(limits("eight"))


def test_operator_rules_reject_duplicate_groups_bad_replicas_and_a_job_without_cluster():
    def duplicate(d):
        d["spec"]["workerGroupSpecs"][1]["groupName"] = d["spec"]["workerGroupSpecs"][0]["groupName"]

    def too_many(d):
        d["spec"]["workerGroupSpecs"][0]["replicas"] = d["spec"]["workerGroupSpecs"][0]["maxReplicas"] + 1

    def too_few(d):
        d["spec"]["workerGroupSpecs"][0]["minReplicas"] = d["spec"]["workerGroupSpecs"][0]["replicas"] + 1

    assert any("used more than once" in e for e in operator_errors(broken("raycluster-gpu.yaml", "RayCluster", duplicate)))
    assert any("<= maxReplicas" in e for e in operator_errors(broken("raycluster-gpu.yaml", "RayCluster", too_many)))
    assert any("minReplicas" in e for e in operator_errors(broken("raycluster-gpu.yaml", "RayCluster", too_few)))
    orphan = broken("rayjob-gpu.yaml", "RayJob", lambda d: d["spec"].pop("clusterSelector"))
    assert operator_errors(orphan) == ["spec: a RayJob needs rayClusterSpec or clusterSelector"]
    assert schema_errors(orphan) == []  # the schema alone would have let it through


# ---- the manifests agree with the code and with each other -----------------------------------------

@pytest.mark.parametrize("name", ["rayjob-cpu-demo.yaml", "rayjob-gpu.yaml"])
def test_entrypoint_config_and_overrides_load(name):
    config, overrides = train_command(one(name, "RayJob"))
    load_config(config, overrides)  # a ConfigError names any unknown key or bad value


def test_gpu_sizes_match_the_worker_groups():
    cfg = load_config(*train_command(one("rayjob-gpu.yaml", "RayJob")))
    groups = {g["groupName"]: g for g in one("raycluster-gpu.yaml", "RayCluster")["spec"]["workerGroupSpecs"]}

    def per_pod(group: str, resource: str) -> int:
        return int(containers(groups[group]["template"])[0]["resources"]["limits"][resource])

    def gpus(group: str) -> int:
        return groups[group]["replicas"] * per_pod(group, "nvidia.com/gpu")

    assert cfg.rollout.num_engines == gpus("rollout")
    assert cfg.train.num_learners == gpus("learner")
    # Every engine and rank asks Ray for a GPU (0, the default, would place them all on CPUs), and what a
    # pod's actors ask for fits the pod.
    assert cfg.rollout.gpus_per_engine == 1 and cfg.train.gpus_per_rank == 1
    engines_per_pod = per_pod("rollout", "nvidia.com/gpu") // cfg.rollout.gpus_per_engine
    ranks_per_pod = per_pod("learner", "nvidia.com/gpu") // cfg.train.gpus_per_rank
    assert engines_per_pod * cfg.rollout.cpus_per_engine <= per_pod("rollout", "cpu")
    assert ranks_per_pod * cfg.train.cpus_per_rank <= per_pod("learner", "cpu")
    assert cfg.train.bf16 and cfg.model.dtype == "bfloat16" and cfg.train.finetune == "lora"
    assert cfg.model.path.startswith("/models/") and cfg.run.out_dir.startswith("/data/")


def test_the_llm_critic_is_reached_as_served():
    cfg = load_config(*train_command(one("rayjob-gpu.yaml", "RayJob")))
    service, deployment = one("critic-vllm.yaml", "Service"), one("critic-vllm.yaml", "Deployment")
    assert cfg.critic.backend == "openai"
    assert cfg.critic.base_url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/v1"
    serve = containers(deployment["spec"]["template"])[0]["args"][0]
    assert f"--served-model-name {cfg.critic.model}" in serve and "--port 8000" in serve
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The span editors' key variable is the one the config reads.
    for template in pod_templates(one("raycluster-gpu.yaml", "RayCluster")).values():
        names = {e["name"] for c in containers(template) for e in c.get("env", [])}
        assert CriticConfig().api_key_env in names


def test_every_ray_node_exports_metrics_where_the_podmonitor_scrapes():
    monitor = one("podmonitor.yaml", "PodMonitor")["spec"]
    [endpoint] = monitor["podMetricsEndpoints"]
    [node_types] = [e["values"] for e in monitor["selector"]["matchExpressions"] if e["key"] == "ray.io/node-type"]
    assert set(node_types) == {"head", "worker"}
    for doc in ray_docs():
        spec = cluster_spec(doc)
        if not spec:
            continue
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        for group in groups:
            port = int(group["rayStartParams"]["metrics-export-port"])
            template = group["template"]
            assert monitor["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
            ports = {p["name"]: p["containerPort"] for p in containers(template)[0]["ports"]}
            assert ports[endpoint["port"]] == port


def test_each_recipe_runs_one_image_everywhere():
    for name, image in [("rayjob-cpu-demo.yaml", "medpo-ray:cpu"), ("rayjob-gpu.yaml", "medpo-ray:gpu"),
                        ("raycluster-gpu.yaml", "medpo-ray:gpu")]:
        for doc in load(name):
            for where, template in pod_templates(doc).items():
                assert {c["image"] for c in containers(template)} == {image}, (name, where)
    dockerfile = (REPO / "deploy/docker/Dockerfile.cpu").read_text()
    assert "WORKDIR /app" in dockerfile and "scripts/setup.sh" in dockerfile


# ---- security: token auth on, no secret written down ------------------------------------------------

def test_ray_token_auth_is_on_and_the_submitters_carry_the_token():
    for doc in ray_docs():
        spec = cluster_spec(doc)
        if spec:
            assert spec["authOptions"]["mode"] == "token", doc["metadata"]["name"]
        if doc["kind"] == "RayJob":
            env = {e["name"]: e for e in containers(doc["spec"]["submitterPodTemplate"])[0]["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "medpo-ray-auth", "key": "auth_token"}


def test_no_secret_value_is_written_in_any_manifest():
    def env_vars(node):
        if isinstance(node, dict):
            env = node.get("env")
            yield from env if isinstance(env, list) else []
            for v in node.values():
                yield from env_vars(v)
        elif isinstance(node, list):
            for v in node:
                yield from env_vars(v)

    for path in MANIFESTS:
        for doc in load(path.relative_to(KUBERAY).as_posix()):
            if doc["kind"] == "Secret":
                assert set(doc["stringData"].values()) == {""} and "data" not in doc, path.name
            for e in env_vars(doc):
                if SECRET_ENV.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (path.name, e["name"])
    assert not any(p.name == "secrets.yaml" for p in KUBERAY.glob("*.yaml")), \
        "secret templates stay in templates/, out of `kubectl apply -f deploy/kuberay/`"
