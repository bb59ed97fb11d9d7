"""Rehearse the AWS GPU cluster on one machine: cluster/gpu.yaml's node types on Ray's fake
multi-node provider, so the autoscaler launches and removes (local, fake-GPU) worker nodes for
a search exactly as it would EC2 instances, without an AWS account.

    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # every node on 127.0.0.1 (see below)
    python -m wsol.search.cluster_rehearsal cluster/gpu.yaml -o /tmp/wsol-fake.yaml
    RAY_FAKE_CLUSTER=1 ray start --head --num-cpus=0 --num-gpus=0 \
        --autoscaling-config=/tmp/wsol-fake.yaml --disable-usage-stats
    python search.py --config experiments/rehearsal-gpu.yaml --address auto
    ray status        # gpu_spot / gpu_on_demand nodes come, and go 30 s after the search
    ray stop

The config is generated from gpu.yaml on every run (node type names, worker limits, upscaling
speed, resources of each instance type), so the rehearsal cannot drift from the real cluster.
Only what the fake provider cannot do is dropped: SSH, setup commands, file mounts. The head
keeps gpu.yaml's {CPU: 0}, so every trial needs a worker node the autoscaler launches.

On Linux Ray replaces 127.0.0.1 by the machine's outward address (even given as
--node-ip-address); RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it keep loopback, for the head,
the fake nodes and the driver alike (it only forbids `ray start --address`, which the fake
provider does not use).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# The fake provider tags the node that `ray start --head` starts with this type name.
FAKE_HEAD_TYPE = "ray.head.default"

# What Ray's AWS provider reads from the EC2 API for `resources: {}` (vCPUs, GPUs); here, as
# the rehearsal runs offline, from this table. A node type of another instance type must state
# its resources in gpu.yaml.
INSTANCE_RESOURCES: dict[str, dict[str, int]] = {
    "g4dn.xlarge": {"CPU": 4, "GPU": 1},
    "g4dn.2xlarge": {"CPU": 8, "GPU": 1},
    "g4dn.12xlarge": {"CPU": 48, "GPU": 4},
    "g5.xlarge": {"CPU": 4, "GPU": 1},
    "g5.2xlarge": {"CPU": 8, "GPU": 1},
    "g5.4xlarge": {"CPU": 16, "GPU": 1},
    "g5.12xlarge": {"CPU": 48, "GPU": 4},
    "g6.xlarge": {"CPU": 4, "GPU": 1},
    "g6.2xlarge": {"CPU": 8, "GPU": 1},
    "p3.2xlarge": {"CPU": 8, "GPU": 1},
    "m6i.2xlarge": {"CPU": 8},
}

# Every node of the rehearsal is a set of local processes: a small object store each.
OBJECT_STORE_BYTES = 128 * 1024**2

# Fields the fake provider does not support; the autoscaler's schema still wants them present.
_UNSUPPORTED_EMPTY: dict[str, Any] = {
    "auth": {}, "docker": {}, "initialization_commands": [], "setup_commands": [],
    "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
    "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}


def node_resources(name: str, node_type: dict[str, Any]) -> dict[str, int]:
    """The resources Ray would give `node_type` on AWS: as stated, else its instance type's."""
    stated = dict(node_type.get("resources") or {})
    instance = node_type.get("node_config", {}).get("InstanceType")
    if instance is None and not stated:
        raise ValueError(f"node type {name!r}: no resources and no InstanceType")
    known = INSTANCE_RESOURCES.get(instance, {}) if instance else {}
    if not known and not stated:
        raise ValueError(f"node type {name!r}: instance type {instance!r} is not in "
                         "INSTANCE_RESOURCES; state its resources in the cluster config")
    # Explicit resources win, as on AWS (the head's {CPU: 0} keeps trials off it).
    return {**known, **stated}


def fake_config(cluster: dict[str, Any], *, port: int = 6379,
                idle_timeout_minutes: float | None = None,
                max_cpus_per_node: int | None = None) -> dict[str, Any]:
    """A `fake_multinode` autoscaling config with `cluster`'s node types.

    `port` is the head's GCS port (`ray start --head --port`); `idle_timeout_minutes`
    replaces the cluster's (minutes of idle EC2 are cheap to wait out, test minutes are not);
    `max_cpus_per_node` caps the CPUs a fake node advertises, for small machines (GPUs, which
    decide how many trials a node takes, are kept).
    """
    head = cluster["head_node_type"]
    types: dict[str, Any] = {}
    for name, node_type in cluster["available_node_types"].items():
        resources = node_resources(name, node_type)
        if name == head:
            # `ray start --head` decides the head's resources; they must match these.
            types[FAKE_HEAD_TYPE] = {"resources": resources, "node_config": {},
                                     "max_workers": 0}
            continue
        if max_cpus_per_node is not None and "CPU" in resources:
            resources["CPU"] = min(resources["CPU"], max_cpus_per_node)
        types[name] = {
            "resources": {**resources, "object_store_memory": OBJECT_STORE_BYTES},
            "node_config": {},
            "min_workers": node_type.get("min_workers", 0),
            "max_workers": node_type.get("max_workers", cluster.get("max_workers", 2)),
        }
    idle = cluster.get("idle_timeout_minutes", 5) if idle_timeout_minutes is None \
        else idle_timeout_minutes
    return {
        "cluster_name": f"{cluster.get('cluster_name', 'wsol')}-rehearsal",
        "max_workers": cluster.get("max_workers", 2),
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle,
        "provider": {
            "type": "fake_multinode",
            # Without it the fake nodes would look for the GCS at <this machine's IP>:6379.
            "gcs_address": f"127.0.0.1:{port}",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        **_UNSUPPORTED_EMPTY,
    }


def head_start_args(config: dict[str, Any]) -> list[str]:
    """`ray start --head` flags that give the head the resources its node type declares."""
    resources = config["available_node_types"][FAKE_HEAD_TYPE]["resources"]
    return [f"--num-cpus={resources.get('CPU', 0)}", f"--num-gpus={resources.get('GPU', 0)}",
            f"--object-store-memory={OBJECT_STORE_BYTES}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsol.search.cluster_rehearsal",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cluster", type=Path, help="a Ray cluster launcher config (gpu.yaml)")
    parser.add_argument("-o", "--output", type=Path, help="where to write (default: stdout)")
    parser.add_argument("--port", type=int, default=6379, help="the head's `--port`")
    parser.add_argument("--idle-timeout-minutes", type=float, default=0.5,
                        help="scale an idle fake node down after this long (default 0.5)")
    parser.add_argument("--max-cpus-per-node", type=int,
                        help="cap each fake worker's CPUs (default: the instance type's)")
    args = parser.parse_args(argv)
    cluster = yaml.safe_load(args.cluster.read_text())
    config = fake_config(cluster, port=args.port, idle_timeout_minutes=args.idle_timeout_minutes,
                         max_cpus_per_node=args.max_cpus_per_node)
    text = yaml.safe_dump(config, sort_keys=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
