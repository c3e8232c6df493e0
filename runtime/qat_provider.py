"""qwix's quantization-aware-training provider, made to tell an activation from a weight by
identity alone (`quant.mode=qat_int8`; imported only by runs that use it).

qwix 0.1.8's `QtProvider` asks, for each operand of an intercepted `dot_general`, whether it is a
parameter of the current module: first by identity, then, failing that, by shape. An activation
that happens to have a kernel's shape is then taken for a second weight, and the trace fails with
"lhs and rhs cannot be both weights". It happens in ordinary configs: the unembedding of a
d_model-32, vocabulary-32 model is a [32, 32] kernel, and a batch of 16 sequences scored at 2
positions reaches it as a [32, 32] activation. Here the left operand is never looked up: in
`models.blocks.Dense`, what the default targets match, the kernel is always the right operand.
With `qat_int8`'s rule (int8 and absmax for weights and activations alike, no static scales, float
gradients) qwix quantizes an operand the same way whether it takes it for a weight or an
activation, so this changes which traces succeed, not what a successful one computes.
"""

from __future__ import annotations

from typing import Any

import jax
import qwix

# Stands in for the left operand when qwix looks it up among the module's parameters: no
# parameter has an empty shape of rank 1.
_NOT_A_PARAMETER = jax.ShapeDtypeStruct((0,), jax.numpy.float32)


class QatProvider(qwix.QtProvider):
    """`qwix.QtProvider` whose left `dot_general` operand is always an activation."""

    def _create_dot_general_qt_config(self, rule: Any, op_id: str, lhs: Any, rhs: Any) -> Any:
        return super()._create_dot_general_qt_config(rule, op_id, _NOT_A_PARAMETER, rhs)
