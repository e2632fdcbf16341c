"""cluster.yaml is a valid Ray cluster-launcher config (the schema shipped inside ray)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

pytestmark = pytest.mark.timeout(60)


def _schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_validates_against_rays_schema(repo_root):
    config = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    jsonschema.validate(config, _schema())
    nodes = config["available_node_types"]
    assert any(n["resources"].get("GPU") for n in nodes.values())  # autoscaling GPU workers
    assert nodes[config["head_node_type"]]["resources"].get("GPU", 0) == 0  # CPU head
    assert any("constraints.txt" in c for c in config["setup_commands"])  # installs the project pinned


def test_a_broken_cluster_yaml_is_rejected(repo_root):
    config = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    config["max_workerz"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, _schema())
