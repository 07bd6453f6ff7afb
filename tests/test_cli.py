from osteoscreen.cli import main


def test_synth_validate_patches_round_trip(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "patches"
    assert main(["synth", str(data), "--n", "3", "--positives", "2", "--seed", "1"]) == 0
    assert main(["validate", str(data)]) == 0
    assert "3 subjects: 1 normal, 2 osteoporosis" in capsys.readouterr().out
    assert main(["patches", str(data), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "montages").iterdir()) == ["P001.png", "P002.png", "P003.png"]
    assert len(list((out / "patches" / "P002").glob("*.png"))) == 8
    assert (out / "overview.png").stat().st_size > 0


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--n", "3", "--positives", "5"]) == 2
    assert not (tmp_path / "x" / "subjects.csv").exists()
