"""The speed benchmark script's plumbing (tools/benchmark.py): which steps it times, and its errors.

No timing is asserted: the figures it prints are for people reading them on one machine."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_times_exactly_the_steps_asked_for_even_one_or_two(tmp_path):
    """--steps 1 and 2 used to fail ("no median for empty data"): the FLOP-counted step was taken out of
    the timed ones. Now it is an extra, untimed step, and a row holds exactly --steps timings."""
    out = tmp_path / "bench.json"
    done = _benchmark("--size", "32", "--ngf", "4", "--warmup", "1", "--steps", "2", "--modes", "fp32",
                      "--workers", "0", "--no-translate", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["what"], r["mode"], r["timed_steps"]) for r in rows] == [("train", "fp32", 2)]
    assert 0 < rows[0]["min_s"] <= rows[0]["median_s"] <= rows[0]["max_s"]
    assert rows[0]["flops"] > 0
    assert "| train | fp32 |" in done.stdout


def test_zero_steps_is_refused_by_name(tmp_path):
    done = _benchmark("--steps", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "--warmup and --steps must be at least 1 (got 3 and 0)" in done.stderr
    assert "Traceback" not in done.stderr
