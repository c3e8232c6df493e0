"""The config a run recorded (its config.json, every key), as a config file:

    python -m launch.train --config=experiments/from_run.py:<run> --workdir=<run>

resumes that run with exactly its config, whatever made it: a converted Hugging Face checkpoint
(`launch.convert`) has no experiment file of its own. Overrides on the command line make a config
that the run directory refuses, so a converted run's fine-tuning settings are given to
`launch.convert`.
"""

import ml_collections

from runtime.workdir import run_config


def get_config(workdir: str = "") -> ml_collections.ConfigDict:
    if not workdir:
        raise ValueError("name the run: --config=experiments/from_run.py:<run directory>")
    return run_config(workdir)
