#!/usr/bin/env bash
# A throw-away Slurm cluster on this machine, for tests and for trying hydra/launcher=slurm
# without a real cluster (docs/distributed.md, "Run it on Slurm"): munged + slurmctld + one slurmd
# per node (2 CPUs each), everything (config, keys, state, logs, pid files) in one directory.
#
#   scripts/slurm_local.sh install            # apt-get install slurm-wlm munge (root)
#   scripts/slurm_local.sh up [DIR] [NODES]   # start it (NODES: 1 or 2 slurmd; default 1)
#   export SLURM_CONF=DIR/slurm.conf          # what `up` prints: sinfo, sbatch, scontrol use it
#   scripts/slurm_local.sh down [DIR]         # stop every daemon it started, remove DIR
#
# DIR defaults to ${TMPDIR:-/tmp}/panns-slurm-local. Ports are picked free at `up`. Needs root
# (slurmd runs jobs as their user) and the Debian packages slurm-wlm and munge. Exit codes:
# 0 up/down; 3 not root; 4 packages missing; 5 a daemon did not come up (its log is printed).
# No accounting database: `sacct -c` reads the job-completion log (jobcomp/filetxt) instead.
set -euo pipefail

die() {
    local code=$1
    shift
    echo "slurm_local.sh: $*" >&2
    exit "$code"
}

default_dir() { echo "${TMPDIR:-/tmp}/panns-slurm-local"; }

need_root() { [ "$(id -u)" -eq 0 ] || die 3 "needs root (slurmd starts jobs as their user); run it as root"; }

need_packages() {
    local missing=()
    for tool in munged mungekey slurmctld slurmd sbatch sinfo scontrol; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] || die 4 "missing ${missing[*]}: install them with 'scripts/slurm_local.sh install' (apt-get install slurm-wlm munge)"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # seconds, description, command...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "slurm_local.sh: $what did not come up within ${limit}s" >&2
    return 1
}

cmd_install() {
    need_root
    command -v apt-get >/dev/null || die 4 "no apt-get here: install Slurm (slurmctld, slurmd, client) and munge with this system's packages"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update once, then try again.
    apt-get install -y --no-install-recommends slurm-wlm munge ||
        { apt-get update && apt-get install -y --no-install-recommends slurm-wlm munge; }
}

cmd_up() {
    local dir=${1:-$(default_dir)} nodes=${2:-1}
    need_root
    need_packages
    case $nodes in 1 | 2) ;; *) die 2 "NODES must be 1 or 2, got $nodes" ;; esac
    [ ! -e "$dir/slurm.conf" ] || die 2 "$dir already holds a cluster: 'scripts/slurm_local.sh down $dir' first"
    mkdir -p "$dir"/{munge,state,log,run}
    chmod 700 "$dir" "$dir/munge"
    dir=$(cd "$dir" && pwd)

    mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null
    /usr/sbin/munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
    wait_for 10 munged munge --socket="$dir/munge/munge.socket" --no-input || { cat "$dir/log/munged.log" >&2; exit 5; }

    local ctld_port node_lines="" names=""
    ctld_port=$(free_port)
    for n in $(seq "$nodes"); do
        node_lines+="NodeName=node$n NodeAddr=127.0.0.1 NodeHostname=node$n Port=$(free_port) CPUs=2 State=UNKNOWN"$'\n'
        names+="${names:+,}node$n"
    done
    # The node names resolve nowhere, and Lightning takes MASTER_ADDR from the environment before
    # it tries the first name of SLURM_NODELIST: every task gets this machine's address.
    printf '#!/bin/sh\n[ -n "$MASTER_ADDR" ] || echo "export MASTER_ADDR=127.0.0.1"\n' >"$dir/task_prolog.sh"
    chmod 755 "$dir/task_prolog.sh"
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a one-machine test cluster ($nodes node(s) x 2 CPUs).
ClusterName=panns-local
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/state/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
KillWait=30
TaskProlog=$dir/task_prolog.sh
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
$node_lines
PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    export SLURM_CONF=$dir/slurm.conf
    /usr/sbin/slurmctld -f "$SLURM_CONF"
    wait_for 20 slurmctld scontrol ping || { cat "$dir/log/slurmctld.log" >&2; exit 5; }
    for n in $(seq "$nodes"); do
        /usr/sbin/slurmd -f "$SLURM_CONF" -N "node$n"
    done
    local idle="sinfo -h -N -t idle -o %N"
    wait_for 30 "slurmd (all $nodes node(s) idle)" bash -c "[ \$($idle | sort -u | wc -l) -eq $nodes ]" || {
        tail -n 30 "$dir"/log/slurmd-*.log "$dir/log/slurmctld.log" >&2
        exit 5
    }
    sinfo >&2
    echo "export SLURM_CONF=$SLURM_CONF"
}

cmd_down() {
    local dir=${1:-$(default_dir)}
    [ -d "$dir" ] || return 0
    [ -f "$dir/slurm.conf" ] || [ -d "$dir/run" ] || die 2 "$dir holds no cluster of this script; not removing it"
    # Every daemon by the pid file it wrote: SIGTERM to all at once (each takes ~2 s to exit), then
    # SIGKILL to any still there after 10 s. Jobs' processes are children of slurmstepd.
    local pids=() pidfile pid
    for pidfile in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid" "$dir/run/munged.pid"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null && pids+=("$pid")
    done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 1 ] || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    # slurmstepd processes of jobs still running (their parent slurmd is gone).
    pkill_stepds "$dir"
    rm -rf "$dir"
}

pkill_stepds() { # only the slurmstepd whose spool dir is under this cluster's directory
    local dir=$1 pid
    for pid in $(pgrep -x slurmstepd || true); do
        if tr '\0' ' ' <"/proc/$pid/environ" 2>/dev/null | grep -q "$dir" ||
            ls -l "/proc/$pid/cwd" 2>/dev/null | grep -q "$dir"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

case ${1:-} in
    install) cmd_install ;;
    up) cmd_up "${2:-}" "${3:-1}" ;;
    down) cmd_down "${2:-}" ;;
    *) die 2 "usage: $0 install | up [DIR] [NODES] | down [DIR]" ;;
esac
