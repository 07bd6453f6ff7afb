import pytest

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


def test_synth_runs_without_loading_torch(tmp_path):
    """The command line adds the flags of the command it runs only, and that command imports what it uses: synth
    needs no torch (`synth --help`: 0.2 s instead of 2.4 s here), the other commands' flags are still listed."""
    import subprocess
    import sys

    code = ("import sys; from osteoscreen.cli import main; "
            f"code = main(['synth', {str(tmp_path / 'd')!r}, '--n', '2', '--positives', '1']); "
            "print(code, 'torch' in sys.modules)")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.splitlines()[-1] == "0 False", ran.stderr
    assert (tmp_path / "d" / "subjects.csv").exists()
    listed = subprocess.run([sys.executable, "-m", "osteoscreen.cli", "--help"], capture_output=True, text=True)
    assert all(f"    {name} " in listed.stdout for name in ("synth", "cv", "train", "predict", "demo"))


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--n", "3", "--positives", "5"]) == 2
    assert not (tmp_path / "x" / "subjects.csv").exists()


def test_library_errors_name_the_arguments_and_the_command_line_its_flags(small_png_cohort, tmp_path, capsys):
    from osteoscreen.evaluation.crossval import CVConfig
    from osteoscreen.evaluation.operating_point import DecisionRule

    with pytest.raises(ValueError, match=r"^folds: expected an integer >= 2, got 1$"):
        CVConfig(folds=1)
    with pytest.raises(ValueError, match=r"^target_sensitivity: expected None or a number strictly between"):
        DecisionRule(target_sensitivity=1.5)
    out = str(tmp_path / "run")
    assert main(["cv", str(small_png_cohort), "--out", out, "--seeds", "0,0"]) == 2
    assert capsys.readouterr().err == "osteoscreen: error: --seeds: expected distinct seeds >= 0, got (0, 0)\n"
    assert main(["cv", str(small_png_cohort), "--out", out, "--protocol", "kfold", "--leave-pair-out"]) == 2
    assert capsys.readouterr().err.startswith("osteoscreen: error: --leave-pair-out: is for --protocol loo with "
                                              "--mode frozen")


def test_flags_replace_only_the_arguments_the_command_line_has():
    from osteoscreen.cli.entry import flags_of, in_flags
    from osteoscreen.cli.parser import build_parser

    flags = flags_of(build_parser())
    assert flags["image_format"] == "--format" and flags["folds"] == "--folds" and flags["patch_mm"] == "--patch-mm"
    assert in_flags("image_format: expected one of png, got 'gif'", flags) == "--format: expected one of png, got 'gif'"
    assert in_flags("x.png: patch_mm=12 needs it", flags) == "x.png: --patch-mm 12 needs it"
    assert in_flags("pass weights='none' or weights=PATH", flags) == "pass --weights none or --weights PATH"
    assert in_flags("unknown_thing: value=3 of https://a.b/?q=1", flags) == "unknown_thing: value=3 of https://a.b/?q=1"
    # an argument's name inside a path or a query string is part of the path, not an argument
    assert in_flags("runs/seed=3/x.png: cannot read it", flags) == "runs/seed=3/x.png: cannot read it"
    assert in_flags("see http://h/?seed=3&folds=2", flags) == "see http://h/?seed=3&folds=2"
    assert in_flags("weights=/tmp/w.pt is missing", flags) == "--weights /tmp/w.pt is missing"


def test_a_montage_shows_each_patch_under_its_name_right_side_above_left():
    """Patch i (LANDMARKS order: right then left of each group) fills its tile, enlarged nearest-neighbour: the
    patient's right sides in the upper row, the groups left to right; the title in the class's colour."""
    import numpy as np

    from osteoscreen.reporting.visualise import (
        CLASS_COLOURS,
        MONTAGE_GAP_PX,
        MONTAGE_NAME_PX,
        MONTAGE_PATCH_PX,
        MONTAGE_TITLE_LINE_PX,
        subject_montage,
    )

    values = np.arange(8) * 30 + 15  # a distinct grey per patch
    patches = np.stack([np.full((100, 100), v / 255.0) for v in values])
    montage = np.asarray(subject_montage(patches, "P001 — osteoporosis", "osteoporosis"))
    side, gap = MONTAGE_PATCH_PX, MONTAGE_GAP_PX
    title_px = 16 + MONTAGE_TITLE_LINE_PX  # one title line
    for index, value in enumerate(values):
        left = gap // 2 + (index // 2) * (side + gap)
        top = title_px + (index % 2) * (MONTAGE_NAME_PX + side + gap // 2) + MONTAGE_NAME_PX
        tile = montage[top:top + side, left:left + side]
        assert (tile == value).all(), (index, np.unique(tile))
    colour = tuple(int(CLASS_COLOURS["osteoporosis"][i:i + 2], 16) for i in (1, 3, 5))
    assert (montage[:title_px] == colour).all(axis=-1).any()  # the title's ink
