"""Which torchao weight-quantization configs run on this CPU, and how fast one SmolLM2-shaped Linear is at
batch 1 (the decode case) against fp32, in one process. torchao is not a slimformer dependency: install the
wheel beside the venv, e.g.

    pip install --no-deps --target /work/ao-site torchao==0.18.0
    PYTHONPATH=/work/ao-site python benchmarks/peers/torchao_cpu.py

Prints a table and writes benchmarks/results/torchao_cpu.json. Shapes: SmolLM2's gate/up (576 -> 1536) and
down (1536 -> 576) projections; 2 threads; median of 200 calls after 20 warm-up calls, fp32 timed first and last.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"
SHAPES = [(576, 1536), (1536, 576)]


def _configs() -> dict[str, object]:
    import torchao.quantization as Q
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quantize_.workflows.intx.intx_packing_format import IntxPackingFormat

    out: dict[str, object] = {
        "Int4WeightOnlyConfig(group_size=32)": Q.Int4WeightOnlyConfig(group_size=32),
        "Int8WeightOnlyConfig()": Q.Int8WeightOnlyConfig(),
        "Int8DynamicActivationInt8WeightConfig()": Q.Int8DynamicActivationInt8WeightConfig(),
    }
    for fmt in IntxPackingFormat:
        out[f"IntxWeightOnlyConfig(int4, PerGroup(32), {fmt.value})"] = Q.IntxWeightOnlyConfig(
            weight_dtype=torch.int4, granularity=PerGroup(32), intx_packing_format=fmt)
        out[f"Int8DynamicActivationIntxWeightConfig(int4, PerGroup(32), {fmt.value})"] = (
            Q.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32),
                                                    intx_packing_format=fmt))
    return out


def _time(mod: torch.nn.Module, x: torch.Tensor, calls: int = 200) -> float:
    with torch.inference_mode():
        for _ in range(20):
            mod(x)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            mod(x)
            samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def main() -> None:
    import torchao
    from torchao.quantization import quantize_

    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    for k, n in SHAPES:
        base = torch.nn.Sequential(torch.nn.Linear(k, n)).eval()
        x = torch.randn(1, k)
        fp32 = [_time(base, x)]
        for name, cfg in _configs().items():
            m = torch.nn.Sequential(torch.nn.Linear(k, n)).eval()
            m.load_state_dict(base.state_dict())
            row = {"shape": f"{k}->{n}", "config": name}
            try:
                quantize_(m, cfg)
                with torch.inference_mode():
                    err = float((m(x) - base(x)).abs().max())
                row |= {"runs": True, "tensor": type(m[0].weight).__name__, "ms": round(_time(m, x), 4),
                        "max_abs_err": round(err, 4)}
            except Exception as e:  # report why a config does not run here
                row |= {"runs": False, "why": str(e).splitlines()[0][:160]}
            rows.append(row)
        fp32.append(_time(base, x))
        for r in rows:
            if r["shape"] == f"{k}->{n}" and r.get("runs"):
                r["x_fp32_time"] = round(r["ms"] / statistics.mean(fp32), 2)
        rows.append({"shape": f"{k}->{n}", "config": "fp32 nn.Linear", "runs": True, "ms": round(statistics.mean(fp32), 4),
                     "fp32_first_last_ms": [round(f, 4) for f in fp32], "x_fp32_time": 1.0})
    payload = {"benchmark": "torchao_cpu", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "torch": torch.__version__, "torchao": torchao.__version__, "python": sys.version.split()[0],
               "machine": platform.processor() or platform.machine(), "threads": 2, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "torchao_cpu.json").write_text(json.dumps(payload, indent=1))
    print("| shape | config | runs | tensor | ms (batch 1) | x fp32 time | why not |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['config']} | {'yes' if r['runs'] else 'no'} | {r.get('tensor', '')} | "
              f"{r.get('ms', '')} | {r.get('x_fp32_time', '')} | {r.get('why', '')} |")


if __name__ == "__main__":
    main()
