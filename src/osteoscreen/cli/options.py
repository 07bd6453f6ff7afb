"""The flags several commands share (training, decision rule, patches, backend) and how they become the library's
configurations (TrainConfig, CVConfig, DecisionRule, PatchConfig); argparse types that refuse a bad value at parse
time (usage error, exit 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import Field, fields, replace

from osteoscreen.core.arguments import value_problem
from osteoscreen.core.errors import InputError


def number(kind: type, low: float, high: float) -> Callable[[str], float]:
    """An argparse type: an int or a finite float within [low, high]; anything else is a usage error (exit 2)."""
    what = "an integer" if kind is int else "a number"
    bounds = f"[{low}, {high}]" if kind is int else f"[{low:g}, {high:g}]"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in {bounds}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {what} in {bounds}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type by it in its messages
    return parse


SEED = number(int, 0, 2**32 - 1)


def add_patch_options(parser: argparse.ArgumentParser) -> None:
    from osteoscreen.data.patches import MAX_PATCH_PX, MIN_PATCH_PX

    parser.add_argument("--patch-px", type=number(int, MIN_PATCH_PX, MAX_PATCH_PX), default=100,
                        help="patch side in pixels (default 100, the paper)")
    parser.add_argument("--patch-mm", type=number(float, 0.1, 200), default=None,
                        help="patch side in mm, converted with each image's pixel spacing (overrides --patch-px)")


def patch_config(args):
    from osteoscreen.data.patches import PatchConfig

    return PatchConfig(patch_px=args.patch_px, patch_mm=args.patch_mm)


def _config_flag_type(spec: Field) -> Callable[[str], object]:
    """The argparse type of an option() field: its kind (int, float, str), then its own choices or rule."""
    kind = type(spec.default)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        problem = value_problem(spec, value)
        if problem or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(problem or f"expected a finite number, got {text!r}")
        return value

    return parse


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """--recipe, then one flag per TrainConfig field that offers one (arguments.option): its documentation as the
    help, its values checked by its own rule, default None (the recipe decides); then the rule and patch flags."""
    from osteoscreen.core.landmarks import DEFAULT_TASK, TASKS
    from osteoscreen.evaluation.operating_point import CALIBRATIONS
    from osteoscreen.training.config import TrainConfig
    from osteoscreen.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_config

    parser.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                        help="the starting point every training flag below changes: osteoscreen (default: this "
                             "project's defaults) or paper (Fan et al. 2021 as published: AlexNet fine-tuned at "
                             "224 px on its pooled fc7 feature, SGD, 100 epochs, no class weighting; ImageNet "
                             "weights from torchvision's file; docs/method.md)")
    recipes = {name: recipe_config(name) for name in RECIPES}
    for spec in fields(TrainConfig):
        if not spec.metadata.get("flag"):
            continue
        values = {name: getattr(config, spec.name) for name, config in recipes.items()}
        default = f"default {values[DEFAULT_RECIPE]}" + "".join(
            f"; --recipe {name}: {value}" for name, value in values.items() if value != values[DEFAULT_RECIPE])
        help_text = f"{spec.metadata['doc']} ({default})".replace("%", "%%")
        flag = "--" + spec.name.replace("_", "-")
        if isinstance(spec.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            choices = spec.metadata["choices"]
            parser.add_argument(flag, type=_config_flag_type(spec), default=None, help=help_text,
                                choices=None if choices is None else list(choices))
    parser.add_argument("--task", choices=list(TASKS), default=DEFAULT_TASK,
                        help="the binary question: osteoporosis-vs-normal (default, the paper's: osteopenia "
                             "excluded), osteoporosis-vs-rest (osteopenia negative) or low-bmd-vs-normal "
                             "(osteopenia positive)")
    parser.add_argument("--calibrate", choices=list(CALIBRATIONS), default="none",
                        help="recalibrate probabilities, fitted on inner out-of-fold scores of the training subjects "
                             "(default none)")
    parser.add_argument("--target-sensitivity", type=number(float, 0.01, 0.99), default=None, metavar="S",
                        help="choose the decision threshold for sensitivity S (e.g. 0.9) on inner out-of-fold "
                             "scores of the training subjects (default: threshold 0.5)")
    add_patch_options(parser)


def train_config(args, head: str = "group-attention"):
    """The recipe's TrainConfig with every training flag given on the command line."""
    from osteoscreen.training.config import TrainConfig
    from osteoscreen.training.recipes import recipe_config

    given = {spec.name: getattr(args, spec.name) for spec in fields(TrainConfig)
             if spec.metadata.get("flag") and getattr(args, spec.name) is not None}
    return recipe_config(args.recipe, **given, head=head, patch=patch_config(args))


def cv_config(args):
    from osteoscreen.evaluation.crossval import DEFAULT_METHODS, CVConfig

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else DEFAULT_METHODS
    train = train_config(args)
    seeds = _seed_list(args.seeds) if args.seeds else (train.seed,)
    return CVConfig(methods=methods, protocol=args.protocol, folds=args.folds, repeats=args.repeats, seeds=seeds,
                    prevalence=args.prevalence, rule=decision_rule(args), leave_pair_out=args.leave_pair_out,
                    task=args.task, train=replace(train, seed=seeds[0]))


def decision_rule(args):
    from osteoscreen.evaluation.operating_point import DecisionRule

    return DecisionRule(args.calibrate, args.target_sensitivity)


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(SEED(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        seeds = ()
    if not seeds:
        raise InputError(f"--seeds: expected comma-separated integers in [0, 2^32) such as 0,1,2, got {text!r}")
    return seeds


def add_backend_options(parser: argparse.ArgumentParser, work: str) -> None:
    parser.add_argument("--backend", choices=["local", "ray"], default="local",
                        help=f"local (default): this machine; ray: one Ray task per {work} (needs osteoscreen[ray])")
    parser.add_argument("--address", default=None,
                        help="ray: the cluster to join (auto, HOST:PORT or ray://HOST:10001); default: start a local "
                             "Ray instance")
    parser.add_argument("--task-cpus", type=number(float, 0, 4096), default=1,
                        help="ray: CPUs each task asks for (default 1)")
    parser.add_argument("--task-gpus", type=number(float, 0, 64), default=0,
                        help="ray: GPUs each task asks for (default 0; 0.25 lets 4 tasks share a GPU)")


def add_pacs_options(parser: argparse.ArgumentParser) -> None:
    """Where DICOM results go: --send (C-STORE) or --stow (STOW-RS), our AE title and the timeout."""
    parser.add_argument("--send", default=None, metavar="AET@HOST:PORT",
                        help="send the DICOM results to a PACS by C-STORE (its AE title, host and DICOM port)")
    parser.add_argument("--stow", default=None, metavar="URL",
                        help="send the DICOM results by DICOMweb STOW-RS to this service URL (e.g. "
                             "http://pacs:8042/dicom-web)")
    parser.add_argument("--calling-aet", default="OSTEOSCREEN", help="--send: our AE title (default OSTEOSCREEN)")
    parser.add_argument("--send-timeout", type=number(float, 0.1, 3600), default=30,
                        help="seconds to wait for the PACS to connect or answer (default 30)")


def pacs_destination(args):
    """The destination --send or --stow names (None when neither)."""
    from osteoscreen.deploy.pacs import dimse_destination, stow_destination

    if args.send and args.stow:
        raise InputError("--send and --stow: give one destination per run (send again for the other)")
    if args.send:
        return dimse_destination(args.send, args.calling_aet, args.send_timeout)
    if args.stow:
        return stow_destination(args.stow, args.send_timeout)
    return None


def send_and_report(run_dir, destination, progress) -> None:
    """Send RUN's DICOM results and print what happened; NotDelivered (exit 1) names each file not accepted."""
    from osteoscreen.core.errors import NotDelivered
    from osteoscreen.deploy.pacs import send_results

    report = send_results(run_dir, destination, progress)
    print(f"sent {len(report.sent)} DICOM file(s) to {destination.address}"
          + (f" ({len(report.already)} accepted earlier, not sent again)" if report.already else ""))
    if report.failed:
        again = f"--send {destination.address}" if destination.kind == "dimse" else f"--stow {destination.address}"
        raise NotDelivered([*report.failed, f"{len(report.failed)} file(s) not sent; they stay in {run_dir}/dicom: "
                                            f"run `osteoscreen send {run_dir} {again}` to send them"])


def backend_check(args) -> None:
    if args.backend == "local" and (args.address or args.task_cpus != 1 or args.task_gpus):
        raise InputError("--address, --task-cpus and --task-gpus need --backend ray")


def sex_code(text: str) -> str:
    from osteoscreen.data.dataset import parse_sex

    sex = parse_sex(text)
    if sex is None:
        raise argparse.ArgumentTypeError(f"expected F or M, got {text!r}")
    return sex
