#!/bin/bash
# A wsol search on a SLURM allocation: a Ray head on the first allocated node, one Ray worker on
# each other node (each with the node's GPUs), then search.py on the head, driving that cluster.
# This follows Ray's documented SLURM pattern (docs.ray.io, "Deploying on Slurm").
#
#   sbatch /path/to/wsol/cluster/slurm.sh --config experiments/cub.yaml \
#       --storage-path /shared/wsol/ray/$USER --tracking-uri sqlite:///$HOME/wsol-mlflow.db
#   sbatch --nodes=4 --gpus-per-node=8 /path/to/wsol/cluster/slurm.sh --config ...
#
# Arguments go to search.py; --address is set here. Every node must see the project (and its
# venv) at the same path, and --storage-path must be on a file system all nodes share (or s3://).
# Settings, from the environment (sbatch passes it on):
#   WSOL_HOME       the project (default: the checkout this script was submitted from)
#   WSOL_PYTHON     its Python (default: $WSOL_HOME/.venv/bin/python); `ray` is looked up beside it
#   WSOL_RAY_PORT   the head's port (default: a free port on the head's node, per job)
#   WSOL_RAY_TMPDIR a node-local folder for Ray's temp dir, made private (mode 700) on every node
#                   (default: a new `mktemp -d /tmp/wsol-ray-XXXXXXXX`)
#   WSOL_NODE_WAIT_S how long to wait for all nodes to join before searching anyway (default 300)
#
# Ray's token authentication is on: the job makes a token of its own (256 random bits) and gives
# it to every Ray node, the readiness probe and search.py in the environment (RAY_AUTH_TOKEN,
# RAY_AUTH_MODE=token), never on a command line, so other users of the nodes cannot join the
# job's cluster, submit to it or read it. Each job has its own ports and temp dir, so two jobs on
# one node never meet: the workers join only once the head answering on the job's address is the
# job's own (its temp dir, with the job's token).
#SBATCH --job-name=wsol-search
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --gpus-per-node=1
#SBATCH --time=24:00:00
#SBATCH --output=wsol-search-%j.log

set -euo pipefail

# sbatch runs a copy of this script from its spool folder, so "the checkout beside this script"
# is found through the path the job was submitted with (scontrol's Command=).
project_of() {
    local dir
    dir=$(cd "$(dirname "$1")/.." 2>/dev/null && pwd) || return 1
    [[ -f "$dir/search.py" && -d "$dir/wsol" ]] && echo "$dir"
}
if [[ -z "${WSOL_HOME:-}" ]]; then
    WSOL_HOME=$(project_of "${BASH_SOURCE[0]}") || WSOL_HOME=""
    if [[ -z "$WSOL_HOME" && -n "${SLURM_JOB_ID:-}" ]]; then
        submitted=$(scontrol show job -o "$SLURM_JOB_ID" | grep -o 'Command=[^ ]*') || true
        WSOL_HOME=$(project_of "${submitted#Command=}") || WSOL_HOME=""
    fi
fi
if [[ -z "$WSOL_HOME" ]]; then
    echo "slurm.sh: cannot find the wsol project; set WSOL_HOME" >&2
    exit 2
fi
WSOL_PYTHON=${WSOL_PYTHON:-$WSOL_HOME/.venv/bin/python}
RAY=$(dirname "$WSOL_PYTHON")/ray
wait_s=${WSOL_NODE_WAIT_S:-300}
: "${SLURM_JOB_ID:?not in a SLURM job}"

# This job's Ray token, in the environment of every step srun starts (srun passes it on).
RAY_AUTH_TOKEN=$("$WSOL_PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN RAY_AUTH_MODE=token
unset RAY_AUTH_TOKEN_PATH

# Ray's temp dir (sockets, logs, spilled objects) lies in a private folder with a name nobody
# can guess: Ray makes its own temp dir readable and writable by all. The batch script runs on
# the job's first node, the head's, and makes the folder there; each step makes it on its node,
# and refuses one that exists but is another user's.
if [[ -n "${WSOL_RAY_TMPDIR:-}" ]]; then
    ray_private=$WSOL_RAY_TMPDIR
else
    ray_private=$(mktemp -d /tmp/wsol-ray-XXXXXXXX)
fi
ray_tmp=$ray_private/ray
in_private=(bash -c 'mkdir -p -m 700 "$0" && [[ -O $0 ]] && exec "$@"' "$ray_private")

# One Ray node per allocated node, with the CPUs and GPUs SLURM gave it (srun does not inherit
# --cpus-per-task from sbatch since Slurm 22.05, so it is passed on).
mapfile -t nodes < <(scontrol show hostnames "${SLURM_JOB_NODELIST:?not in a SLURM job}")
if [[ ${#nodes[@]} -eq 0 ]]; then
    echo "slurm.sh: no nodes in SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST" >&2
    exit 2
fi
head=${nodes[0]}
step=(--nodes=1 --ntasks=1)
resources=()
if [[ -n "${SLURM_CPUS_PER_TASK:-}" ]]; then
    step+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
    resources+=("--num-cpus=$SLURM_CPUS_PER_TASK")
fi
if [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then
    step+=("--gpus-per-node=$SLURM_GPUS_PER_NODE")
    resources+=("--num-gpus=${SLURM_GPUS_PER_NODE##*:}")  # "a100:2" -> 2
fi

# The head's IPv4 address (hostname --ip-address may list IPv6 addresses too).
head_ip=""
for ip in $(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address); do
    if [[ $ip =~ ^[0-9]+(\.[0-9]+){3}$ ]]; then
        head_ip=$ip
        break
    fi
done
if [[ -z "$head_ip" ]]; then
    echo "slurm.sh: no IPv4 address for $head" >&2
    exit 2
fi
# Ports of the job's own, free on the head's node: the GCS, Ray client server, dashboard.
if [[ -n "${WSOL_RAY_PORT:-}" ]]; then
    port=$WSOL_RAY_PORT
    head_ports=()
else
    read -r port client_port dashboard_port < <(srun --nodes=1 --ntasks=1 -w "$head" \
        "$WSOL_PYTHON" -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("", 0))
print(*(s.getsockname()[1] for s in socks))')
    head_ports=("--ray-client-server-port=$client_port" "--dashboard-port=$dashboard_port")
fi
address=$head_ip:$port
echo "Ray head: $head ($address), workers: ${nodes[*]:1}"

# When the search ends (or fails), stop the Ray nodes this job started.
trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT

srun "${step[@]}" -w "$head" "${in_private[@]}" "$RAY" start --head --node-ip-address="$head_ip" --port="$port" \
    ${head_ports[@]+"${head_ports[@]}"} ${resources[@]+"${resources[@]}"} \
    --temp-dir="$ray_tmp" --disable-usage-stats --block &
head_step=$!

# Workers join once the head on $address is this job's: it accepts the job's token and its head
# node runs in the job's temp dir (not merely something listening on the port).
this_jobs_head() {
    timeout 20 "$WSOL_PYTHON" - "$address" "$ray_tmp" <<'EOF' >/dev/null 2>&1
import sys

from ray._raylet import GcsClient

address, temp_dir = sys.argv[1:]
nodes = GcsClient(address=address).get_all_node_info(timeout=10).values()
sys.exit(0 if any(n.is_head_node and n.temp_dir == temp_dir for n in nodes) else 1)
EOF
}
for ((i = 0; ; i++)); do
    sleep 2
    if ! kill -0 "$head_step" 2>/dev/null || ((i == 90)); then
        echo "slurm.sh: the job's Ray head did not come up on $address" >&2
        exit 1
    fi
    this_jobs_head && break
done
for node in "${nodes[@]:1}"; do
    srun "${step[@]}" -w "$node" "${in_private[@]}" "$RAY" start --address="$address" \
        ${resources[@]+"${resources[@]}"} --temp-dir="$ray_tmp" --disable-usage-stats --block &
done

"$WSOL_PYTHON" - "$address" "${#nodes[@]}" "$wait_s" <<'EOF'
import sys
import time

import ray

address, want, wait_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR")
deadline = time.time() + wait_s
while (up := sum(node["Alive"] for node in ray.nodes())) < want and time.time() < deadline:
    time.sleep(2)
print(f"{up} of {want} Ray nodes up")
EOF

"$WSOL_PYTHON" -u "$WSOL_HOME/search.py" --address "$address" "$@"
