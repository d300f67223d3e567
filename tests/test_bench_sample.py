"""experiments/bench_sample.py: the matrix's smallest row (a toy preset) prints its JSON line."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "experiments" / "bench_sample.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_sample", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow   # about 15 CPU-s quiet (one toy sampler compile); minutes on a loaded machine
def test_matrix_row_prints_json(capsys):
    bench = _bench()
    assert bench.main(["--matrix", "--presets", "tiny", "--batches", "1", "--repeats", "1",
                       "--top-k", "5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["preset"], r["batch"]) for r in rows] == [("tiny", 1)]
    for r in rows:
        assert r["images_per_s"] > 0 and r["ms_per_image"] > 0 and r["compile_s"] >= 0
        assert r["peak_memory_gib"] > 0 and r["memory_kind"]
        assert r["image_size"] == 8 and r["tokens"] == 30


def test_matrix_presets_and_bad_flags():
    bench = _bench()
    var, vae = bench.configs("d36", "float32")
    assert (var.depth, vae.image_size, var.shared_aln) == (36, 512, True)
    var, vae = bench.configs("d20", "bfloat16")
    assert (var.embed_dim, var.dtype, vae.image_size) == (1280, "bfloat16", 256)
    with pytest.raises(SystemExit):
        bench.parse_args(["--matrix", "--presets", "big"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--matrix", "--batches", "0"])
