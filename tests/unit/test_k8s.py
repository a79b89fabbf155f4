"""The Kubernetes manifests in docker/k8s, checked as far as no cluster is needed: two replicas
through the lease, probes calling `cdc health` through the entrypoint, the config from the
ConfigMap (valid, with ha on and no secret in it), the secrets as files the entrypoint reads,
resources sized from the measured peak RSS, and the metrics port annotated for Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cdc.config import MetricsConfig, load_config

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
PEAK_RSS_MB = 117
"""The highest peak RSS measured (scripts/bench.sh, the wide table); the limit must clear it."""


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def test_the_deployment_runs_two_replicas_with_probes_mounts_and_resources() -> None:
    deployment = _load("deployment.yaml")
    assert deployment["kind"] == "Deployment"
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["/usr/local/bin/cdc-entrypoint", "health"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["CDC_CONFIG"] == mounts["config"] + "/connector.yaml"
    for variable in ("MYSQL_PASSWORD_FILE", "ES_API_KEY_FILE", "REDIS_URL_FILE"):
        assert env[variable].startswith(mounts["secrets"] + "/"), variable
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == _load("configmap.yaml")["metadata"]["name"]
    assert (
        volumes["secrets"]["secret"]["secretName"]
        == _load("secret.example.yaml")["metadata"]["name"]
    )
    resources = container["resources"]
    assert _mib(resources["requests"]["memory"]) > PEAK_RSS_MB
    assert _mib(resources["limits"]["memory"]) >= 2 * PEAK_RSS_MB
    annotations = spec["template"]["metadata"]["annotations"]
    port = str(MetricsConfig().port)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port
    assert {p["containerPort"] for p in container["ports"]} == {int(port)}
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_the_secret_holds_every_file_the_deployment_reads() -> None:
    deployment = _load("deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    files = {e["value"].rsplit("/", 1)[1] for e in container["env"] if e["name"].endswith("_FILE")}
    assert files == set(_load("secret.example.yaml")["stringData"])


def test_the_configmap_holds_a_valid_config_with_ha_and_no_secrets(tmp_path: Path) -> None:
    text = _load("configmap.yaml")["data"]["connector.yaml"]
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    env = {
        "MYSQL_PASSWORD": "pw-from-file",
        "ES_API_KEY": "aWQ6a2V5",
        "REDIS_URL": "redis://:pw@redis:6379/0",
    }

    cfg = load_config(path, env=env)

    assert cfg.ha.enabled and cfg.checkpoint.redis is not None
    assert cfg.metrics.port == MetricsConfig().port
    assert cfg.source.password == "pw-from-file"
    for secret in env.values():
        assert secret not in text
