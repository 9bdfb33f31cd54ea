"""deploy/kubernetes/, validated without a cluster: the standard objects against the Kubernetes
schemas (kubernetes-validate, strict: an unknown field fails), the KEDA ScaledObject against
KEDA's documented nats-jetstream trigger and the buckets the Deployment's workers take from,
the NATS Helm values against what the workflow needs of its cluster."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from workflow.core.subjects import STREAM, BucketKey
from workflow.worker.config import WorkerConfig

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
KUBERNETES = "1.30"

#: KEDA's ScaledObject spec (keda.sh/v1alpha1) and its nats-jetstream trigger's metadata, as
#: KEDA's documentation lists them (https://keda.sh/docs/scalers/nats-jetstream/).
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "idleReplicaCount",
                      "initialCooldownPeriod", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
JETSTREAM_REQUIRED = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"}
JETSTREAM_OPTIONAL = {"activationLagThreshold", "useHttps"}


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def the(kind: str) -> dict:
    [found] = [doc for name in ("worker-deployment.yaml", "keda-scaledobject.yaml") for doc in documents(name)
               if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("kind", ["Deployment", "Secret"])
def test_the_standard_objects_are_valid_kubernetes(kind):
    assert kubernetes_validate.validate(the(kind), KUBERNETES, strict=True) == KUBERNETES


def test_the_validator_refuses_a_misspelt_field():
    broken = copy.deepcopy(the("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretReff"] = {"name": "x"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def worker_options() -> tuple[str, str, dict[str, str]]:
    """(pipeline, site, the other --options) of the Deployment's `workflow run`."""
    [container] = the("Deployment")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["workflow", "run"]
    pipeline, options = args[2], dict(zip(args[3::2], args[4::2], strict=True))
    return pipeline, options["--site"], options


def test_the_deployment_runs_a_valid_worker_of_the_pipeline_it_is_labelled_with():
    pipeline, site, options = worker_options()
    assert the("Deployment")["metadata"]["labels"]["workflow/pipeline"] == pipeline
    WorkerConfig(pipelines=[pipeline], site=site, concurrency=int(options["--concurrency"]),
                 sleep=float(options["--sleep"])).check()
    assert the("Deployment")["spec"]["replicas"] == 0  # KEDA's to set


def test_the_scaled_object_uses_kedas_nats_jetstream_trigger_on_every_bucket_of_the_workers():
    scaled = the("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled["spec"]) <= SCALED_OBJECT_SPEC
    assert scaled["spec"]["scaleTargetRef"]["name"] == the("Deployment")["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]
    pipeline, site, _ = worker_options()
    consumers = set()
    for trigger in scaled["spec"]["triggers"]:
        metadata = trigger["metadata"]
        assert trigger["type"] == "nats-jetstream"
        assert JETSTREAM_REQUIRED <= set(metadata) <= JETSTREAM_REQUIRED | JETSTREAM_OPTIONAL
        assert all(isinstance(value, str) for value in metadata.values()), "KEDA's metadata is strings"
        assert metadata["stream"] == STREAM
        assert int(metadata["lagThreshold"]) > 0 and int(metadata["activationLagThreshold"]) >= 0
        assert metadata["useHttps"] in ("true", "false")
        _host, port = re.fullmatch(r"([a-z0-9.-]+):(\d+)", metadata["natsServerMonitoringEndpoint"]).groups()
        assert int(port) == nats_values()["config"]["monitor"]["port"]
        consumers.add(metadata["consumer"])
    assert consumers == {BucketKey(pipeline, site, priority).consumer for priority in range(1, 6)}


def nats_values() -> dict:
    [values] = documents("nats-values.yaml")
    return values


def test_the_nats_values_make_a_three_node_jetstream_cluster_with_the_monitoring_keda_reads():
    config = nats_values()["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    assert config["jetstream"]["enabled"] and config["jetstream"]["fileStore"]["enabled"]
    assert config["monitor"] == {"enabled": True, "port": 8222}
    repository_conf = (DEPLOY.parent.parent / "nats.conf").read_text()
    payload = re.search(r"max_payload:\s*(\S+)", repository_conf).group(1)
    assert config["merge"]["max_payload"] == f"<< {payload} >>"
