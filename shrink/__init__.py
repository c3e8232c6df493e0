"""Making a trained run smaller, into a new run directory that every command reads like any run:
one module per job.

- `quantized_run`: post-training int8 quantization with qwix (`launch.quantize`); the model side
  of quantization, which training and evaluation share, is `runtime.quantization`;
- `measurements`: bytes and decoding time of a run beside its source.

Not named `compression`: Python 3.14's standard library has a `compression` package, which JAX
imports (`from compression import zstd`); ours would shadow it wherever the repository is on the
path, as would a study file of that name in `experiments/` for a command run from there.
"""
