#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the tests that submit jobs (CI runs it
# before `make test`; run it by hand too). Needs root and Debian; no systemd: the daemons are
# started directly. Idempotent: when the cluster is already up it only checks it and returns.
#
#   .ci/slurm_cluster.sh     # ends with the node idle, or prints the daemon logs and exits 1
#
# The node is this machine (CPUs = nproc), in one default partition `debug`. No slurmdbd: sacct
# does not work here; job state comes from `squeue` / `scontrol show job` (completed jobs stay
# visible for MinJobAge seconds) and finished jobs are also logged by jobcomp/filetxt.
set -euo pipefail

TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-120} # seconds to wait for the node to become idle
NODE=$(hostname -s)
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
MUNGE_KEY=/etc/munge/munge.key
MARKER="# Written by .ci/slurm_cluster.sh" # heads the config; any other config is left alone

log() { echo "slurm_cluster: $*"; }

die() {
    echo "slurm_cluster: error: $*" >&2
    for f in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log /var/log/munge/munged.log; do
        if [[ -f $f ]]; then
            echo "--- tail of $f" >&2
            tail -n 30 "$f" >&2
        fi
    done
    exit 1
}

running() { pgrep -x "$1" >/dev/null; } # by exact name: only checks, never signals

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null || true; }

# ------------------------------------------------------------------------------------ packages
install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sinfo >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurmd slurmctld slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages' own service starts fail without systemd; that is expected and harmless.
    apt-get install -y -qq --no-install-recommends slurmd slurmctld slurm-client munge >/dev/null
}

# --------------------------------------------------------------------------------------- munge
start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! running munged; then
        log "starting munged"
        # As the munge user, who owns the key; --force: start despite warnings (a stale socket,
        # directory permissions this container does not set up the way munged likes).
        runuser -u munge -- munged --force || die "munged did not start"
    fi
    munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge)"
}

# -------------------------------------------------------------------------------------- config
render_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    # RealMemory above what slurmd finds would drain the node: leave a tenth (at least 1 GiB).
    mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024); r = int(m * 0.9); print (m - r < 1024 ? m - 1024 : r)}' /proc/meminfo)
    cat <<EOF
$MARKER: a single-node test cluster. Edits here are overwritten.
ClusterName=archlab
# One machine: the daemons talk over loopback, whatever the hostname resolves to (if at all).
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups here (a container): track processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
# CPUs are the unit allocated (not whole cores, not memory), so tasks fit one per CPU.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# No slurmdbd, so no sacct: finished jobs stay in scontrol for MinJobAge s, and are logged here.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
MinJobAge=600
# A node that was down (daemons restarted) rejoins as soon as its slurmd registers.
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

# Writes the config; sets CONF_CHANGED when it differs from what was there.
CONF_CHANGED=""
write_conf() {
    local new
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
    new=$(render_conf)
    if [[ -f $CONF_DIR/slurm.conf ]]; then
        [[ $(cat "$CONF_DIR/slurm.conf") == "$new" ]] && return
        # Someone else's cluster: never overwrite it (nor restart its daemons).
        grep -q "^$MARKER" "$CONF_DIR/slurm.conf" \
            || die "$CONF_DIR/slurm.conf was not written by this script; move it away to use it"
    fi
    printf '%s\n' "$new" >"$CONF_DIR/slurm.conf"
    CONF_CHANGED=1
}

# ------------------------------------------------------------------------------------- daemons
stop_daemon() { # $1: name; by the pid in its pid file, waiting until that process is gone
    local pidfile=/run/$1.pid pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
}

# Starts whichever daemon is not running: also one that died or is still shutting down when
# this script began (the wait below calls this again until the cluster answers).
ensure_daemons() {
    if ! running slurmctld; then
        log "starting slurmctld"
        slurmctld || die "slurmctld did not start"
    fi
    if ! running slurmd; then
        log "starting slurmd"
        slurmd || die "slurmd did not start"
    fi
}

# Ready: the controller answers, and the node is idle and runs a two-task step, or is busy
# with jobs and its slurmd answers (a check step could wait behind those jobs for long).
PROBLEM=""
ready() {
    local state out
    scontrol ping 2>/dev/null | grep -q UP || { PROBLEM="slurmctld does not answer"; return 1; }
    state=$(node_state)
    case $state in
        idle) ;;
        mix | alloc)
            scontrol show slurmd >/dev/null 2>&1 && return 0
            PROBLEM="node $NODE is $state but its slurmd does not answer"
            return 1
            ;;
        down | drain | drng | fail) # a node left down by a slurmd that died: bring it back
            scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
            PROBLEM="node $NODE is $state"
            return 1
            ;;
        *) PROBLEM="node $NODE is '$state'"; return 1 ;; # e.g. idle*: slurmd not registered
    esac
    if ! out=$(timeout 30 srun -n 2 -t 1 hostname 2>&1) \
        || [[ $(wc -l <<<"$out") -ne 2 ]]; then
        PROBLEM="srun -n 2 hostname failed: $out"
        return 1
    fi
}

main() {
    [[ $(id -u) -eq 0 ]] || { echo "slurm_cluster: error: run as root" >&2; exit 1; }
    local start=$SECONDS deadline=$((SECONDS + TIMEOUT))
    install_packages
    start_munge
    write_conf
    if [[ -n $CONF_CHANGED ]]; then
        log "wrote $CONF_DIR/slurm.conf"
        stop_daemon slurmd # a running cluster picks the new config up by a restart
        stop_daemon slurmctld
    fi
    until ensure_daemons && ready; do
        if ((SECONDS >= deadline)); then
            sinfo -N -l >&2 || true
            die "cluster not ready after ${TIMEOUT}s: $PROBLEM"
        fi
        sleep 1
    done
    log "up after $((SECONDS - start))s: node $NODE $(node_state)," \
        "$(sinfo -h -o '%c CPUs, partition %P')"
}

main "$@"
