"""sw.demo (make demo): runs the shipped model on the core's program, equal to intref."""

from sw.demo import main


def test_demo_runs_and_checks_every_token(capsys):
    assert main(["--prompt", "KING", "-n", "6", "--temperature", "0.8", "--top-k", "40", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "every one of 10 tokens: logits identical to the integer reference" in out
    assert "tokens/s" in out


def test_demo_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert main(["--checkpoint", str(bad), "-n", "1"]) == 2
    assert "cannot load" in capsys.readouterr().err
