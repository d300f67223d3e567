"""experiments/bench_fast_sampling.py and digits_fast_sampling.py: flags, variants, output."""
import importlib.util
import json
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def _script(name, monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))   # bench_fast_sampling imports bench_sample
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_flags(monkeypatch):
    bench = _script("bench_fast_sampling", monkeypatch)
    args = bench.parse_args(["--drafter", "30", "--refiner", "d16", "--prune-depths", "16,0,d30"])
    assert (args.drafter, args.refiner, args.prune_depths) == ("d30", "d16", ["d16", "d30"])
    assert bench.parse_args(["--drafter", "0"]).drafter == ""
    with pytest.raises(SystemExit):
        bench.parse_args(["--drafter", "big"])


@pytest.mark.slow   # three toy sampler compiles: about 20 CPU-s quiet
def test_bench_tiny_rows(monkeypatch, capsys):
    bench = _script("bench_fast_sampling", monkeypatch)
    assert bench.main(["--drafter", "tiny", "--refiner", "tiny", "--draft-scales", "2",
                       "--prune-depths", "tiny", "--prune-ratios", "0.5", "--prune-scales", "1",
                       "--repeats", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in rows] == ["tiny plain", "tiny prune ratio 0.5 last 1 scales",
                                            "tiny drafts 2 + tiny refines"]
    assert all(r["images_per_s"] > 0 and r["cpu_s_per_call"] >= 0 for r in rows)


def test_digits_variants_and_table(monkeypatch):
    digits = _script("digits_fast_sampling", monkeypatch)
    args = digits.parse_args(["--draft-scales", "3,1", "--prune-ratios", "0.5",
                              "--prune-scales", "1,2"])
    large, small = ("L", "cfg_L"), ("S", "cfg_S")
    rows = digits.variants(args, large, small)
    assert [(name, model) for name, model, _ in rows] == [
        ("large plain", large), ("small plain", small),
        ("large drafts 3 + small refines", large), ("large drafts 1 + small refines", large),
        ("large prune 0.5 last 1", large), ("large prune 0.5 last 2", large)]
    assert rows[2][2] == dict(refiner=small, draft_scales=3)
    assert rows[5][2] == dict(prune_ratio=0.5, prune_scales=2)
    table = digits.markdown_table([
        dict(variant="a", class_agreement=0.9, frechet=1.0),
        dict(variant="a", class_agreement=1.0, frechet=2.0),
        dict(variant="b", class_agreement=0.5, frechet=3.0)])
    assert table.splitlines()[2:] == ["| a | 95.0 ± 5.0 | 1.50 ± 0.50 |",
                                      "| b | 50.0 ± 0.0 | 3.00 ± 0.00 |"]
