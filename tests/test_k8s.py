"""`launch.k8s` renders a manifest whose N pods join one JAX runtime through `launch.train`'s
coordinator flags: process 0's stable DNS name, N, and each pod's completion index."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from cluster import kubernetes as k8s
from launch import k8s as k8s_cli
from runtime.errors import UsageError
from tests.conftest import REPO
from tests.test_train_cli import assert_usage_error

CONFIG = "experiments/mqar_mixers.py"
BASE = k8s.Launch(
    config=CONFIG, workdir="/mnt/runs/x", name="mqar-x", image="archlab:1", num_processes=4
)
TINY_CONFIG = """
import ml_collections

def get_config():
    config = ml_collections.ConfigDict()
    config.train = ml_collections.ConfigDict({"steps": 10})
    return config
"""


def launch(**changes: Any) -> k8s.Launch:
    return dataclasses.replace(BASE, **changes)


def job_of(objects: list[dict]) -> dict:
    """The batch/v1 Job (its spec), wherever the kind puts it."""
    (top,) = [o for o in objects if o["kind"] in ("JobSet", "Job")]
    if top["kind"] == "JobSet":
        (replicated,) = top["spec"]["replicatedJobs"]
        return replicated["template"]["spec"]
    return top["spec"]


def container_of(objects: list[dict]) -> dict:
    (container,) = job_of(objects)["template"]["spec"]["containers"]
    return container


def flag(container: dict, name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]
    return value


def process_zero_dns_name(objects: list[dict]) -> str:
    """Derived from the naming rules, not from launch.k8s: an Indexed Job's pod i has hostname
    <job>-<i>; a JobSet's Jobs are <jobset>-<replicatedJob>-<job index>; either is reachable as
    <hostname>.<subdomain> (the JobSet's network subdomain, defaulting to its name, or the pod
    template's subdomain, which a headless Service of that name serves)."""
    top = next(o for o in objects if o["kind"] in ("JobSet", "Job"))
    if top["kind"] == "JobSet":
        network = top["spec"]["network"]
        assert network["enableDNSHostnames"] is True
        (replicated,) = top["spec"]["replicatedJobs"]
        assert replicated["replicas"] == 1
        subdomain = network.get("subdomain", top["metadata"]["name"])
        return f"{top['metadata']['name']}-{replicated['name']}-0-0.{subdomain}"
    subdomain = top["spec"]["template"]["spec"]["subdomain"]
    return f"{top['metadata']['name']}-0.{subdomain}"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.k8s", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


# ------------------------------------------------------------------------- the objects themselves
def test_jobset_is_one_replicated_indexed_job_of_n_pods():
    (jobset,) = k8s.render(launch(num_processes=4))
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert jobset["kind"] == "JobSet"
    assert jobset["spec"]["network"]["enableDNSHostnames"] is True
    (replicated,) = jobset["spec"]["replicatedJobs"]
    assert replicated["replicas"] == 1
    job = replicated["template"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 4
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_indexed_job_comes_with_a_headless_service_for_its_pods():
    service, job = k8s.render(launch(kind="indexed-job", num_processes=3, namespace="lab"))
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["metadata"]["name"] == pod["spec"]["subdomain"]
    assert service["metadata"]["namespace"] == job["metadata"]["namespace"] == "lab"


# ---------------------------------------------------------------------- the coordinator flags
@pytest.mark.parametrize("kind", k8s.KINDS)
def test_every_process_finds_process_zero_by_its_dns_name(kind):
    objects = k8s.render(launch(kind=kind, port=4321, num_processes=8))
    container = container_of(objects)
    assert flag(container, "coordinator_address") == f"{process_zero_dns_name(objects)}:4321"
    assert {"name": "coordinator", "containerPort": 4321} in container["ports"]
    assert flag(container, "num_processes") == "8"


@pytest.mark.parametrize("kind", k8s.KINDS)
def test_process_id_is_the_pods_completion_index(kind):
    container = container_of(k8s.render(launch(kind=kind)))
    process_id = flag(container, "process_id")
    assert process_id.startswith("$(") and process_id.endswith(")"), "expanded by Kubernetes"
    var = process_id[2:-1]
    env = {e["name"]: e for e in container["env"]}
    if var in env:  # defined here: through the downward API, from the index annotation
        field = env[var]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    else:  # otherwise only the variable the Job controller adds to every container will do
        assert var == "JOB_COMPLETION_INDEX"


def test_the_pods_run_launch_train_on_the_config_and_workdir_with_overrides_last():
    overrides = ("--config.train.steps=500", "--config.model.mixer=mamba")
    container = container_of(k8s.render(launch(config=f"{CONFIG}:mamba", overrides=overrides)))
    assert container["command"] + container["args"][:2] == [
        "python",
        "-m",
        "launch.train",
        f"--config={CONFIG}:mamba",
        "--workdir=/mnt/runs/x",
    ]
    assert tuple(container["args"][-2:]) == overrides


def test_literal_dollars_survive_kubernetes_variable_expansion():
    """Kubernetes reads $$ as $ and $(X) as a reference: the user's own text is escaped."""
    odd = launch(workdir="/mnt/$(USER)", overrides=("--config.a=$5",))
    container = container_of(k8s.render(odd))
    assert flag(container, "workdir") == "/mnt/$$(USER)"
    assert container["args"][-1] == "--config.a=$$5"


# ------------------------------------------------------------------- resources, volume, env
def test_gpus_are_a_limit_only_when_asked_for():
    cpu_only = container_of(k8s.render(launch(cpu="8", memory="32Gi")))
    assert cpu_only["resources"]["requests"] == {"cpu": "8", "memory": "32Gi"}
    assert cpu_only["resources"]["limits"] == {"cpu": "8", "memory": "32Gi"}
    with_gpus = container_of(k8s.render(launch(gpus_per_process=4)))
    assert with_gpus["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert "resources" not in container_of(k8s.render(BASE))


def test_devices_per_process_forces_cpu_devices():
    container = container_of(k8s.render(launch(devices_per_process=2)))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert "XLA_FLAGS" not in {e["name"] for e in container_of(k8s.render(BASE))["env"]}


def test_volume_claim_is_mounted_where_asked():
    objects = k8s.render(launch(volume_claim="runs", mount_path="/mnt/runs"))
    pod = job_of(objects)["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": "runs"}
    (mount,) = pod["containers"][0]["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": "/mnt/runs"}
    assert k8s.warnings(launch(volume_claim="runs", mount_path="/mnt/runs")) == []
    assert k8s.warnings(launch(volume_claim="runs", mount_path="/data"))  # workdir outside it
    assert k8s.warnings(BASE)  # no shared volume at all


def test_extra_env_vars_are_passed_in_order():
    container = container_of(k8s.render(launch(env={"B": "2", "A": "x=y"})))
    user = [(e["name"], e["value"]) for e in container["env"] if e["name"] in ("A", "B")]
    assert user == [("B", "2"), ("A", "x=y")]


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"name": "Mqar"}, "DNS label"),
        ({"name": "9lives"}, "DNS label"),
        ({"name": "a" * 64}, "DNS label"),
        ({"name": "a" * 50}, "too long"),  # a-...-train-0-3 plus the pod name's suffix > 63
        ({"name": "a" * 60, "kind": "indexed-job", "num_processes": 1000}, "too long"),
        ({"num_processes": 0}, "--num-processes"),
        ({"port": 0}, "--port"),
        ({"port": 65536}, "--port"),
        ({"volume_claim": "runs"}, "--mount-path"),
        ({"env": {"JOB_COMPLETION_INDEX": "0"}}, "JOB_COMPLETION_INDEX"),
        ({"memory": "lots"}, "--memory"),
        ({"gpus_per_process": 1, "devices_per_process": 2}, "--devices-per-process"),
    ],
)
def test_bad_launches_are_refused(changes, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)):
        k8s.check(launch(**changes))


def test_longest_allowed_names_still_give_dns_label_hostnames():
    name = "a" * 63
    k8s.check(launch(name=name[:-2], kind="indexed-job", num_processes=1))  # a...a-0: 63
    k8s.check(launch(name=name[: 63 - len("-train-0-0-abcde")], num_processes=1))


# ------------------------------------------------------------------------------ the command line
@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    return str(path)


def cli_args(config: str, *extra: str) -> list[str]:
    return [f"--config={config}", "--workdir=/mnt/x", "--name=tiny", "--image=i", *extra]


def test_cli_prints_a_manifest_that_parses_back(tiny_config):
    result = run_cli(
        *cli_args(tiny_config, "--num-processes=2", "--kind=indexed-job"),
        "--config.train.steps=3",
    )
    assert result.returncode == 0, result.stderr
    service, job = yaml.safe_load_all(result.stdout)
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert flag(container, "coordinator_address") == "tiny-0.tiny:1234"
    assert container["args"][-1] == "--config.train.steps=3"
    assert result.stderr.startswith("warning: no --volume-claim")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--num-processes=2", "--config.train.stepz=3"], ["unknown config key 'train.stepz'"]),
        (["--num-processes=2", "--config.train.steps=many"], ["train.steps"]),
        (["--num-processes=0"], ["--num-processes"]),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_config, tmp_path, extra, fragments):
    output = tmp_path / "job.yaml"
    result = run_cli(*cli_args(tiny_config, *extra, f"--output={output}"))
    assert_usage_error(result, *fragments)
    assert not output.exists()


def test_missing_config_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        k8s_cli.main(["k8s", *cli_args(str(tmp_path / "nope.py"), "--num-processes=2")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_output_is_never_overwritten_with_something_else(tiny_config, tmp_path, capsys):
    output = tmp_path / "job.yaml"
    args = ["k8s", *cli_args(tiny_config, "--num-processes=2", f"--output={output}")]
    assert k8s_cli.main(args) == 0
    first = output.read_text()
    assert next(yaml.safe_load_all(first))["kind"] == "JobSet"
    assert k8s_cli.main(args) == 0, "the same manifest again is fine"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        k8s_cli.main([*args[:-2], "--num-processes=3", args[-1]])
    assert exit_info.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "exists with other content" in err[0]
    assert output.read_text() == first
