"""`var-jax edit` end to end on the golden tiny weights."""
import pathlib

import numpy as np
from PIL import Image

from var_jax.cli import main

GOLDEN = pathlib.Path(__file__).parent.parent / "fixtures" / "golden"
WEIGHTS = ["--var", str(GOLDEN / "var_tiny_l2norm.pth"), "--vae", str(GOLDEN / "vae.pth"),
           "--patch-nums", "1,2,3,4", "--top-k", "8", "--compile-cache", ""]


def test_edit_writes_input_masked_input_and_edits(tmp_path, capsys):
    io = np.load(GOLDEN / "vae_io.npz")
    src = tmp_path / "in.png"
    Image.fromarray(((io["img"][0].transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255)
                    .astype(np.uint8)).save(src)
    out = tmp_path / "edit.png"
    assert main(["edit", str(src), "--class", "3", "--box", "0.25,0.25,0.75,0.75", "--num", "3",
                 "--batch-size", "2", "--out", str(out)] + WEIGHTS) == 0
    assert "3 edits" in capsys.readouterr().out
    row = np.asarray(Image.open(out)).astype(int)
    assert row.shape == (64, 5 * 64 + 4 * 2, 3)
    np.testing.assert_array_equal(row[:, :64], np.asarray(Image.open(src)))
    masked = row[:, 66:130]
    assert (masked[16:48, 16:48] == 128).all() and (masked[:16] == row[:16, :64]).all()
    edits = [row[:, 132 + 66 * i:196 + 66 * i] for i in range(3)]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(edits, edits[1:])), "distinct keys"
