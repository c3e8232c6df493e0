"""Kubernetes: the manifest (a JobSet, or an Indexed Job with its headless Service) that runs one
`launch.train` run as N JAX processes, one per pod (see `launch.k8s` for the command)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from runtime.errors import UsageError

KINDS = ("jobset", "indexed-job")
REPLICATED_JOB = "train"  # the JobSet's one replicated Job: pods are <name>-train-<job>-<pod>
CONTAINER = "train"
VOLUME = "workdir"
POD_LABEL = "archlab/job"  # on every pod of a run; the indexed-job Service selects on it
INDEX_ENV = "JOB_COMPLETION_INDEX"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
GPU_RESOURCE = "nvidia.com/gpu"
MAX_LABEL = 63  # DNS label length: names, hostnames and subdomains
MAX_INDEXED_PARALLELISM = (
    100_000  # Kubernetes refuses more for an Indexed Job (we run all N at once)
)
# JobSet's webhook refuses a JobSet whose longest pod name, <hostname>-<5 random chars>, is not a
# DNS label; a plain Job's pods only need their hostname, <name>-<index>, to be one.
JOBSET_POD_NAME_SUFFIX = len("-abcde")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
QUANTITY = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|[munkMGTPE]|[KMGTPE]i)?")


@dataclasses.dataclass(frozen=True)
class Launch:
    """Everything the manifest depends on; `check` says whether it makes a valid one."""

    config: str  # experiments/file.py[:arg], relative to the image's working directory
    workdir: str  # inside the pods
    name: str
    image: str
    num_processes: int
    kind: str = "jobset"
    port: int = 1234
    namespace: str = "default"
    cpu: str | None = None
    memory: str | None = None
    gpus_per_process: int = 0
    devices_per_process: int | None = None
    volume_claim: str | None = None
    mount_path: str | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    overrides: tuple[str, ...] = ()  # --config.<key>=<value>, passed through unchanged


# ------------------------------------------------------------------------------------- naming
def pod_hostname(launch: Launch, index: int) -> str:
    """The hostname Kubernetes gives process `index`'s pod: an Indexed Job names it
    <job>-<index>, and a JobSet's Jobs are <jobset>-<replicatedJob>-<job index>."""
    if launch.kind == "jobset":
        return f"{launch.name}-{REPLICATED_JOB}-0-{index}"
    return f"{launch.name}-{index}"


def coordinator_address(launch: Launch) -> str:
    """Process 0's stable DNS name (<hostname>.<subdomain>, resolved within the namespace) and
    port. The subdomain is the run's name in both kinds: the JobSet's network subdomain, or the
    headless Service we create beside the Job."""
    return f"{pod_hostname(launch, 0)}.{launch.name}:{launch.port}"


# ------------------------------------------------------------------------------------- checks
def check(launch: Launch) -> None:
    """Raises UsageError for anything Kubernetes or JAX would refuse later (or never start)."""
    if launch.kind not in KINDS:
        raise UsageError(f"--kind={launch.kind!r} must be one of {', '.join(KINDS)}")
    if not 1 <= launch.num_processes <= MAX_INDEXED_PARALLELISM:
        raise UsageError(
            f"--num-processes must be in [1, {MAX_INDEXED_PARALLELISM}], got {launch.num_processes}"
        )
    check_label("--name", launch.name, DNS_1035_LABEL, "start with a letter")
    check_label("--namespace", launch.namespace, DNS_1123_LABEL, "start with a letter or digit")
    check_hostname_length(launch)
    if not launch.image.strip():
        raise UsageError("--image must name a container image")
    if not 0 < launch.port < 65536:
        raise UsageError(f"--port must be in [1, 65535], got {launch.port}")
    check_resources(launch)
    check_volume(launch)
    check_env(launch)


def check_label(flag: str, value: str, pattern: re.Pattern[str], start: str) -> None:
    if len(value) > MAX_LABEL or not pattern.fullmatch(value):
        raise UsageError(
            f"{flag}={value!r} must be a DNS label: at most {MAX_LABEL} lowercase letters, "
            f"digits and '-', {start} and end with a letter or digit"
        )


def check_hostname_length(launch: Launch) -> None:
    longest = pod_hostname(launch, launch.num_processes - 1)
    limit = MAX_LABEL - (JOBSET_POD_NAME_SUFFIX if launch.kind == "jobset" else 0)
    if len(longest) > limit:
        raise UsageError(
            f"--name={launch.name!r} is too long: the pod hostname {longest!r} has "
            f"{len(longest)} characters, at most {limit} fit (--kind={launch.kind})"
        )


def check_resources(launch: Launch) -> None:
    for flag, value in (("--cpu", launch.cpu), ("--memory", launch.memory)):
        if value is not None and not QUANTITY.fullmatch(value):
            raise UsageError(f"{flag}={value!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")
    if launch.gpus_per_process < 0:
        raise UsageError(f"--gpus-per-process must be >= 0, got {launch.gpus_per_process}")
    if launch.devices_per_process is not None:
        if launch.devices_per_process < 1:
            raise UsageError(
                f"--devices-per-process must be >= 1, got {launch.devices_per_process}"
            )
        if launch.gpus_per_process:
            # The flag forces CPU devices; with GPUs, JAX's devices are the GPUs themselves.
            raise UsageError("--devices-per-process is for CPU pods; drop it with GPUs")


def check_volume(launch: Launch) -> None:
    if (launch.volume_claim is None) != (launch.mount_path is None):
        raise UsageError("--volume-claim and --mount-path go together; give both or neither")
    if launch.volume_claim is not None:
        check_label(
            "--volume-claim", launch.volume_claim, DNS_1123_LABEL, "start with a letter or digit"
        )
        if not launch.mount_path.startswith("/"):
            raise UsageError(f"--mount-path={launch.mount_path!r} must be an absolute path")


def check_env(launch: Launch) -> None:
    ours = {INDEX_ENV} | ({"XLA_FLAGS"} if launch.devices_per_process else set())
    for key in launch.env:
        if not ENV_NAME.fullmatch(key):
            raise UsageError(f"--env {key!r}: not a valid environment variable name")
        if key in ours:
            raise UsageError(f"--env {key}: set by this manifest itself")


def warnings(launch: Launch) -> list[str]:
    """Legal but probably wrong: a workdir that the processes may not share."""
    if launch.mount_path is None:
        return [
            f"no --volume-claim: {launch.workdir!r} must be a directory every pod shares "
            "(Orbax writes checkpoints collectively), or the run cannot checkpoint or resume"
        ]
    mount, workdir = os.path.normpath(launch.mount_path), os.path.normpath(launch.workdir)
    if not os.path.isabs(workdir) or os.path.commonpath([mount, workdir]) != mount:
        return [f"--workdir={launch.workdir!r} is not under --mount-path={launch.mount_path!r}"]
    return []


# ------------------------------------------------------------------------------------- render
def literal(arg: str) -> str:
    """Kubernetes expands $(VAR) in container args and reads $$ as one $: doubling every $
    keeps a config path, workdir or override exactly as given."""
    return arg.replace("$", "$$")


def train_args(launch: Launch) -> list[str]:
    return [
        f"--config={literal(launch.config)}",
        f"--workdir={literal(launch.workdir)}",
        f"--coordinator_address={coordinator_address(launch)}",
        f"--num_processes={launch.num_processes}",
        f"--process_id=$({INDEX_ENV})",  # the one reference Kubernetes should expand
        *(literal(arg) for arg in launch.overrides),
    ]


def container_env(launch: Launch) -> list[dict[str, Any]]:
    # The Job controller injects JOB_COMPLETION_INDEX only into containers that lack it; stating
    # it here (from the same annotation) keeps the manifest self-explanatory.
    env: list[dict[str, Any]] = [
        {
            "name": INDEX_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
        }
    ]
    if launch.devices_per_process:
        env.append(
            {
                "name": "XLA_FLAGS",
                "value": f"--xla_force_host_platform_device_count={launch.devices_per_process}",
            }
        )
    env.extend({"name": key, "value": value} for key, value in launch.env.items())
    return env


def resources(launch: Launch) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS: never throttled below its share, evicted last),
    since one slow or lost process stalls every collective. GPUs, an extended resource, are
    given as a limit only; Kubernetes sets the request equal to it."""
    amounts = {k: v for k, v in (("cpu", launch.cpu), ("memory", launch.memory)) if v is not None}
    limits: dict[str, Any] = dict(amounts)
    if launch.gpus_per_process:
        limits[GPU_RESOURCE] = launch.gpus_per_process
    out: dict[str, Any] = {}
    if amounts:
        out["requests"] = dict(amounts)
    if limits:
        out["limits"] = limits
    return out


def container(launch: Launch) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": CONTAINER,
        "image": launch.image,
        "command": ["python", "-m", "launch.train"],
        "args": train_args(launch),
        "env": container_env(launch),
        "ports": [{"name": "coordinator", "containerPort": launch.port}],
    }
    if res := resources(launch):
        spec["resources"] = res
    if launch.volume_claim is not None:
        spec["volumeMounts"] = [{"name": VOLUME, "mountPath": launch.mount_path}]
    return spec


def pod_template(launch: Launch) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container(launch)]}
    if launch.kind == "indexed-job":
        spec["subdomain"] = launch.name  # the headless Service: <name>-<i>.<name> resolves
    if launch.volume_claim is not None:
        spec["volumes"] = [
            {"name": VOLUME, "persistentVolumeClaim": {"claimName": launch.volume_claim}}
        ]
    return {"metadata": {"labels": {POD_LABEL: launch.name}}, "spec": spec}


def job_spec(launch: Launch) -> dict[str, Any]:
    """All N processes at once, each with its own completion index; one failure ends the Job,
    since jax.distributed cannot take a restarted process back into a running group."""
    return {
        "completionMode": "Indexed",
        "completions": launch.num_processes,
        "parallelism": launch.num_processes,
        "backoffLimit": 0,
        "template": pod_template(launch),
    }


def metadata(launch: Launch) -> dict[str, Any]:
    return {"name": launch.name, "namespace": launch.namespace, "labels": {POD_LABEL: launch.name}}


def render_jobset(launch: Launch) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "metadata": metadata(launch),
            "spec": {
                # Subdomain stated, not left to the default, so the address above cannot drift.
                "network": {"enableDNSHostnames": True, "subdomain": launch.name},
                "replicatedJobs": [
                    {"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": job_spec(launch)}}
                ],
            },
        }
    ]


def render_indexed_job(launch: Launch) -> list[dict[str, Any]]:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(launch),
        "spec": {
            "clusterIP": "None",  # headless: DNS records for the pods, no virtual IP
            "selector": {POD_LABEL: launch.name},
            # Names resolve as soon as pods have IPs, not only once Ready: every process looks
            # process 0 up while they all start (JobSet's own default too).
            "publishNotReadyAddresses": True,
            "ports": [{"name": "coordinator", "port": launch.port}],
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(launch),
        "spec": job_spec(launch),
    }
    return [service, job]  # the Service first, so the names exist when the pods start


def render(launch: Launch) -> list[dict[str, Any]]:
    """The manifest's objects, in the order to apply them. Assumes `check(launch)` passed."""
    if launch.kind == "jobset":
        return render_jobset(launch)
    return render_indexed_job(launch)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=1000)
