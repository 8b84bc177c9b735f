"""What every benchmark adds to its JSON (the machine, the versions, the date) and how it writes
it: `bench/results/<benchmark>-<config>-<cpu|cuda>-<date>.json`, plus a one-line summary."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

import lightning as L
import torch


def environment(device: torch.device) -> dict:
    """The machine a figure was measured on: device name, CPU threads, versions, date."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "lightning": L.__version__, "python": platform.python_version()},
        "date": dt.date.today().isoformat(),
    }


def write_result(result: dict, out: str | Path, benchmark: str, config: str, device: torch.device,
                 summary: tuple[str, ...]) -> Path:
    """Write `result` (with `environment` merged in) as JSON; print the `summary` keys and the path."""
    result = {**result, **environment(device)}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu"
    path = folder / f"{benchmark}-{Path(config).stem}-{tag}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in summary}))
    print(f"wrote {path}")
    return path
