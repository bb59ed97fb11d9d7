#!/bin/bash
# A wsol search on a SLURM allocation: a Ray head on the first allocated node, one Ray worker on
# each other node (each with the node's GPUs), then search.py on the head, driving that cluster.
# This follows Ray's documented SLURM pattern (docs.ray.io, "Deploying on Slurm").
#
#   sbatch /path/to/wsol/cluster/slurm.sh --config experiments/cub.yaml \
#       --storage-path /shared/wsol/ray --tracking-uri sqlite:///$HOME/wsol-mlflow.db
#   sbatch --nodes=4 --gpus-per-node=8 /path/to/wsol/cluster/slurm.sh --config ...
#
# Arguments go to search.py; --address is set here. Every node must see the project (and its
# venv) at the same path, and --storage-path must be on a file system all nodes share (or s3://).
# Settings, from the environment (sbatch passes it on):
#   WSOL_HOME       the project (default: the checkout this script was submitted from)
#   WSOL_PYTHON     its Python (default: $WSOL_HOME/.venv/bin/python); `ray` is looked up beside it
#   WSOL_RAY_PORT   the head's port (default 6379)
#   WSOL_RAY_TMPDIR Ray's node-local temp dir (default /tmp/wsol-ray-$SLURM_JOB_ID)
#   WSOL_NODE_WAIT_S how long to wait for all nodes to join before searching anyway (default 300)
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
port=${WSOL_RAY_PORT:-6379}
ray_tmp=${WSOL_RAY_TMPDIR:-/tmp/wsol-ray-${SLURM_JOB_ID:?not in a SLURM job}}
wait_s=${WSOL_NODE_WAIT_S:-300}

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
address=$head_ip:$port
echo "Ray head: $head ($address), workers: ${nodes[*]:1}"

# When the search ends (or fails), stop the Ray nodes this job started.
trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT

srun "${step[@]}" -w "$head" "$RAY" start --head --node-ip-address="$head_ip" --port="$port" \
    ${resources[@]+"${resources[@]}"} --temp-dir="$ray_tmp" --disable-usage-stats --block &
head_step=$!

# Workers can join once the head's GCS accepts connections.
for ((i = 0; ; i++)); do
    (exec 3<>"/dev/tcp/$head_ip/$port") 2>/dev/null && break
    if ! kill -0 "$head_step" 2>/dev/null || ((i == 180)); then
        echo "slurm.sh: the Ray head did not come up on $address" >&2
        exit 1
    fi
    sleep 1
done
for node in "${nodes[@]:1}"; do
    srun "${step[@]}" -w "$node" "$RAY" start --address="$address" \
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
