"""Renders a Kubernetes manifest that runs one `launch.train` run as N JAX processes.

    python -m launch.k8s --config=experiments/mqar_mixers.py[:arg] --workdir=/mnt/runs/x \
        --name=mqar-x --image=registry/archlab:tag --num-processes=4 \
        [--kind=jobset|indexed-job] [--port=1234] [--namespace=default] [--cpu=8] \
        [--memory=32Gi] [--gpus-per-process=0] [--devices-per-process=D] \
        [--volume-claim=<pvc> --mount-path=/mnt] [--env KEY=VALUE ...] [--output=job.yaml] \
        [--config.<key>=<value> ...]
    kubectl apply -f job.yaml

Every pod runs the same command, `python -m launch.train --config=... --workdir=...
--coordinator_address=<process 0>:<port> --num_processes=N --process_id=$(JOB_COMPLETION_INDEX)`,
and `launch.train` joins JAX's own runtime (`jax.distributed.initialize`) with it: there is no
launcher of ours in between. The process id is the pod's completion index in an Indexed Job;
process 0's address is its pod's stable DNS name.

- `--kind=jobset` (default): a JobSet (`jobset.x-k8s.io/v1alpha2`, needs the JobSet controller)
  with one replicated Job; process 0 is `<name>-train-0-0.<name>`.
- `--kind=indexed-job`: a plain `batch/v1` Indexed Job plus the headless Service that gives its
  pods DNS names; process 0 is `<name>-0.<name>`.

The pods run the image's own `python` from its working directory, so the image must hold this
repository (the config file and overrides are checked here, against the local checkout). The
workdir must be one directory that every pod sees (a ReadWriteMany volume: `--volume-claim`):
Orbax writes checkpoints collectively, and a rerun of the manifest resumes from them. One failed
process fails the whole run (`backoffLimit: 0`, `restartPolicy: Never`): the others could not go
on without it. `--devices-per-process` forces D CPU devices per pod (for CPU test clusters).
`--env` values are Kubernetes env values, so `$(VAR)` in them refers to the pod's env.

The manifest goes to stdout, or to `--output` (an existing file with other content is refused).
Exit status 2 with one `error: ...` line for bad input, before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from cluster.kubernetes import KINDS, Launch, check, render, to_yaml, warnings
from runtime.config import check_config_command, parse_env_pairs
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error


def parse_args(argv: list[str]) -> tuple[Launch, str | None]:
    """The launch and --output; the --config.* overrides are kept in order, unparsed."""
    parser = ArgumentParser(prog="python -m launch.k8s", description=__doc__, allow_abbrev=False)
    parser.add_argument("--config", required=True, help="experiments/file.py[:arg]")
    parser.add_argument("--workdir", required=True, help="the run directory, inside the pods")
    parser.add_argument("--name", required=True, help="the Job/JobSet name (a DNS label)")
    parser.add_argument("--image", required=True, help="a container image holding archlab")
    parser.add_argument("--num-processes", type=int, required=True, help="JAX processes (pods)")
    parser.add_argument("--kind", default="jobset", choices=KINDS)
    parser.add_argument("--port", type=int, default=1234, help="process 0's coordinator port")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--cpu", help="CPU request and limit per pod, e.g. 8 or 500m")
    parser.add_argument("--memory", help="memory request and limit per pod, e.g. 32Gi")
    parser.add_argument("--gpus-per-process", type=int, default=0)
    parser.add_argument("--devices-per-process", type=int, help="forced CPU devices per pod")
    parser.add_argument("--volume-claim", help="a PersistentVolumeClaim every pod mounts")
    parser.add_argument("--mount-path", help="where the claim is mounted in the pods")
    parser.add_argument("--env", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", help="write the manifest here instead of stdout")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        raise UsageError(
            f"unknown argument {unknown[0]!r} (config overrides are --config.<key>=<value>)"
        )
    launch_fields = {f.name for f in dataclasses.fields(Launch)}
    given = {k: v for k, v in vars(args).items() if k in launch_fields and v is not None}
    return Launch(
        **{**given, "env": parse_env_pairs(args.env), "overrides": tuple(rest)}
    ), args.output


def holds(output: str, text: str) -> bool:
    """Whether --output already holds this manifest; a file with anything else is refused,
    never overwritten."""
    if not os.path.exists(output):
        return False
    with open(output) as f:
        if f.read() == text:
            return True
    raise UsageError(f"--output={output!r} exists with other content; remove it or choose another")


def write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    with open(output, "x") as f:  # "x": a file that appeared meanwhile is not overwritten either
        f.write(text)
    print(f"wrote {output}: kubectl apply -f {output}", file=sys.stderr)


@exit_on_usage_error
def main(argv: list[str]) -> int:
    launch, output = parse_args(argv[1:])
    check(launch)
    check_config_command(launch.config, launch.overrides)
    text = to_yaml(render(launch))
    unchanged = output is not None and holds(output, text)
    for warning in warnings(launch):
        print(f"warning: {warning}", file=sys.stderr)
    if unchanged:
        print(f"{output} already holds this manifest", file=sys.stderr)
    else:
        write(text, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
