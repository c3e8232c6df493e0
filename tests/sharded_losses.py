"""The first training losses and gradient norms of zoo models on 1 device and on a mesh of 8.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.sharded_losses \
        <case>@<mesh> [<case>@<mesh> ...]

Run by tests/test_zoo_training.py, all cases in one process of its own (the device count is
fixed when JAX starts; one process saves each case the start-up). For each case both runs build
the same experiment through `runtime.assembly` (the pieces `launch.train` uses), start from the
same initial parameters and read the same batches, so their losses may differ only by the order
of floating-point sums. The optimizer is SGD: Adam's
first updates are about lr * sign(g), so a gradient component near zero whose last bit differs
between the two sum orders moves by a whole learning rate, and a few steps later the losses
differ by 1e-5 for reasons that have nothing to do with sharding (seen with Hyena: 2e-5 at the
third step under AdamW, 1e-7 over six steps under SGD).
"""

from __future__ import annotations

import json
import sys

import jax
import ml_collections

from experiments import digits_mlp, mqar_mixers
from models.lm import layer_mixers
from runtime import assembly
from runtime import mesh as mesh_lib
from tests.conftest import tiny_overrides

STEPS = 3
SEQUENCE_CASES = tuple(mqar_mixers.ARMS)  # every sequence mixer, MoE and the hybrid
VISION_CASES = ("vit", "mlp_mixer")
MESHES = {
    "data=2,fsdp=2,tensor=2": {"data": 2, "fsdp": 2, "tensor": 2, "expert": 1},
    "data=2,tensor=2,expert=2": {"data": 2, "fsdp": 1, "tensor": 2, "expert": 2},
}
SINGLE = {"data": 1, "fsdp": 1, "tensor": 1, "expert": 1}


def case_config(case: str) -> ml_collections.ConfigDict:
    """One layer of the arm's mixer (a hybrid: its own layers) at TINY's data and width, or a
    small vision model.

    One layer shards every parameter and activation an arm of one mixer has; more layers repeat
    the same block and, unrolled, multiply the compile time that is most of this check's cost."""
    if case in VISION_CASES:
        config = digits_mlp.get_config()
        config.model.name = case
        config.model.update(num_layers=1, d_model=32, num_heads=2, d_ff=64)
        config.train.batch_size = 16
        return config
    config = mqar_mixers.get_config(case)
    layers = len(layer_mixers(config.model)) if config.model.layer_pattern else 1
    config.update_from_flattened_dict(tiny_overrides())
    config.model.num_layers = layers
    return config


def losses(
    config: ml_collections.ConfigDict, mesh: dict[str, int], devices: list
) -> list[list[float]]:
    """[loss, gradient norm] of each of the first steps."""
    config.mesh.update(mesh)
    config.optimizer.name = "sgd"
    exp = assembly.build(config, devices)
    state = assembly.fresh_state(exp)
    out = []
    with exp.context():
        for _ in range(STEPS):
            batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
            state, metrics = exp.train_step(state, batch, *exp.step_extras)
            out.append([float(metrics["total_loss"]), float(metrics["grad_norm"])])
    return out


def main(cases: list[str]) -> None:
    """One JSON line: {"<case>@<mesh>": {"single": ..., "sharded": ...} or {"error": ...}}."""
    devices = jax.devices()
    results = {}
    for key in cases:
        case, mesh_name = key.split("@")
        try:
            results[key] = {
                "single": losses(case_config(case), SINGLE, devices[:1]),
                "sharded": losses(case_config(case), MESHES[mesh_name], devices[:8]),
            }
        except Exception as e:  # reported against its own case; the others still run
            results[key] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
