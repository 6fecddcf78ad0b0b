"""Peak host memory of training steps, measured in fresh processes per engine (CPU backends).

``python -m xpcnn.bench.memory ENGINE MODEL BATCH STEPS [CxHxW]`` prints the process's peak resident
memory after set-up and STEPS training steps. The steps' own need is the difference between a
run with steps and one with none (same imports, same set-up).
"""

from __future__ import annotations

import json
import subprocess
import sys

from xpcnn import strict_json
from xpcnn.backend import profiling


def measure_in_subprocess(engine: str, model: str, batch_size: int, steps: int = 3,
                          input_shape: tuple[int, int, int] | None = None) -> int:
    """Bytes of peak-RSS growth while ``engine`` ("xpcnn" or "torch") trains ``model`` at ``batch_size`` on images of
    ``input_shape`` ``(C, H, W)`` (default: the preset's own, as :func:`xpcnn.bench.harness.preset_input_shape`)."""
    shape = [] if input_shape is None else ["x".join(map(str, input_shape))]
    def peak(n: int) -> int:
        out = subprocess.run([sys.executable, "-m", "xpcnn.bench.memory", engine, model, str(batch_size), str(n),
                              *shape], capture_output=True, text=True, check=True).stdout
        return int(json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"])
    return peak(steps) - peak(0)


def _main(engine: str, model: str, batch_size: int, steps: int,
          input_shape: tuple[int, int, int] | None = None) -> None:
    from xpcnn import backend as B
    from xpcnn.bench.harness import XpcnnStep
    from xpcnn.kernels.numpy.compiled import warm_up
    warm_up()  # numba's compiler is a one-time cost of the process, like the libraries' own memory
    ours = XpcnnStep(model, batch_size, B.resolve("cpu"), input_shape=input_shape)
    step = ours.train
    if engine == "torch":
        from xpcnn.backend.torch_reference import TorchTrainStep
        ref = TorchTrainStep(ours.model.config(), ours.model.state_dict(), batch_size, input_shape=ours.input_shape)
        del ours
        step = ref.train
    for _ in range(steps):
        step()
    print(strict_json.dumps({"engine": engine, "peak_rss_bytes": profiling.process_peak_rss_bytes()}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
          tuple(int(v) for v in sys.argv[5].split("x")) if len(sys.argv) > 5 else None)
