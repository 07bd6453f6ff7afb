"""Command line (README "Command-line tour"): the parser (`build_parser`), one `cmd_*` function per command that
turns its arguments into the library's configurations and calls the modules that do the work, and `main`, which
prints bad input (InputError, its argument names reworded into flags by `in_flags`) as one line.

Exit codes: 0 success, 2 bad input or usage, 1 internal error.
"""

from __future__ import annotations

import argparse
import errno
import functools
import math
import re
import sys
from collections.abc import Callable
from dataclasses import Field, fields, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from osteoscreen import __version__
from osteoscreen.arguments import value_problem
from osteoscreen.errors import InputError, InputWarning
from osteoscreen.models.heads import CLINICAL_HEADS, HEADS
from osteoscreen.utils import keep_freed_memory


def progress(description: str, unit: str = "subject") -> Callable:
    """A progress-bar wrapper for an iterable (to stderr, so stdout stays clean)."""
    return lambda iterable: tqdm(iterable, desc=description, unit=unit, file=sys.stderr, leave=False,
                                 dynamic_ncols=True)


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


def _add_patch_options(parser: argparse.ArgumentParser) -> None:
    from osteoscreen.data.patches import MAX_PATCH_PX, MIN_PATCH_PX

    parser.add_argument("--patch-px", type=number(int, MIN_PATCH_PX, MAX_PATCH_PX), default=100,
                        help="patch side in pixels (default 100, the paper)")
    parser.add_argument("--patch-mm", type=number(float, 0.1, 200), default=None,
                        help="patch side in mm, converted with each image's pixel spacing (overrides --patch-px)")


def _patch_config(args):
    from osteoscreen.data.patches import PatchConfig

    return PatchConfig(patch_px=args.patch_px, patch_mm=args.patch_mm)


def cmd_synth(args) -> None:
    from osteoscreen.data.phantom import PhantomConfig, synthesise

    options = dict(n=args.n, positives=args.positives, osteopenia=args.osteopenia, seed=args.seed,
                   image_format=args.format, effect=args.effect, age_signal=args.age_signal)
    if args.signal is None:
        config = PhantomConfig(**options)
    else:
        config = PhantomConfig.carrying([g.strip() for g in args.signal.split(",") if g.strip()], **options)
    out = synthesise(args.out, config, progress=progress("synth"))
    carried = ", ".join(f"{g} {config.weight(g):.2f}" for g in config.signal if config.weight(g) > 0) or "none"
    osteopenia = f", {config.osteopenia} osteopenia" if config.osteopenia else ""
    print(f"wrote {config.n} synthetic subjects ({config.positives} osteoporosis{osteopenia}) to {out}; signal: "
          f"{carried}")


def describe_dataset(dataset) -> str:
    """Summary lines: subjects per class, image sizes, pixel spacing."""
    import numpy as np

    from osteoscreen.landmarks import WHO_CLASSES

    counts = {name: sum(s.who == index for s in dataset.subjects) for index, name in enumerate(WHO_CLASSES)}
    counts = {name: n for name, n in counts.items() if n or name != "osteopenia"}
    lines = [f"{len(dataset.subjects)} subjects: " + ", ".join(f"{n} {name}" for name, n in counts.items())]
    shapes = np.array([s.image_shape for s in dataset.subjects if s.image_shape is not None])
    if len(shapes):
        lines.append(f"image sizes (W x H): {shapes[:, 1].min()}-{shapes[:, 1].max()} x "
                     f"{shapes[:, 0].min()}-{shapes[:, 0].max()} px")
    spacings = [s.spacing_mm for s in dataset.subjects if s.spacing_mm is not None]
    lines.append(f"pixel spacing: {min(spacings):.4f}-{max(spacings):.4f} mm ({len(spacings)} of "
                 f"{len(dataset.subjects)} subjects)" if spacings else "pixel spacing: not given")
    return "\n".join(lines)


def cmd_validate(args) -> None:
    from osteoscreen.data.dataset import load_dataset

    dataset = load_dataset(args.data)
    print(f"{args.data}: valid\n{describe_dataset(dataset)}")


def cmd_patches(args) -> None:
    from osteoscreen.patch_export import export_patches

    summary = export_patches(args.data, args.out, _patch_config(args), progress=progress("patches"))
    if summary.padded_patches:
        print(f"warning: {summary.padded_patches} patch(es) reached past the image border and were "
              "reflect-padded", file=sys.stderr)
    print(f"wrote patches and montages of {len(summary.dataset.subjects)} subjects to {args.out} (index.csv names "
          f"each subject's files); overview: {summary.overview}")


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


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """--recipe, then one flag per TrainConfig field that offers one (arguments.option): its documentation as the
    help, its values checked by its own rule, default None (the recipe decides); then the rule and patch flags."""
    from osteoscreen.landmarks import DEFAULT_TASK, TASKS
    from osteoscreen.operating_point import CALIBRATIONS
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
    _add_patch_options(parser)


def _train_config(args, head: str = "group-attention"):
    """The recipe's TrainConfig with every training flag given on the command line."""
    from osteoscreen.training.config import TrainConfig
    from osteoscreen.training.recipes import recipe_config

    given = {spec.name: getattr(args, spec.name) for spec in fields(TrainConfig)
             if spec.metadata.get("flag") and getattr(args, spec.name) is not None}
    return recipe_config(args.recipe, **given, head=head, patch=_patch_config(args))


def _cv_config(args):
    from osteoscreen.evaluation.crossval import DEFAULT_METHODS, CVConfig

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else DEFAULT_METHODS
    train = _train_config(args)
    seeds = _seed_list(args.seeds) if args.seeds else (train.seed,)
    return CVConfig(methods=methods, protocol=args.protocol, folds=args.folds, repeats=args.repeats, seeds=seeds,
                    prevalence=args.prevalence, rule=_decision_rule(args), leave_pair_out=args.leave_pair_out,
                    task=args.task, train=replace(train, seed=seeds[0]))


def _decision_rule(args):
    from osteoscreen.operating_point import DecisionRule

    return DecisionRule(args.calibrate, args.target_sensitivity)


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(SEED(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        seeds = ()
    if not seeds:
        raise InputError(f"--seeds: expected comma-separated integers in [0, 2^32) such as 0,1,2, got {text!r}")
    return seeds


def _add_backend_options(parser: argparse.ArgumentParser, work: str) -> None:
    parser.add_argument("--backend", choices=["local", "ray"], default="local",
                        help=f"local (default): this machine; ray: one Ray task per {work} (needs osteoscreen[ray])")
    parser.add_argument("--address", default=None,
                        help="ray: the cluster to join (auto, HOST:PORT or ray://HOST:10001); default: start a local "
                             "Ray instance")
    parser.add_argument("--task-cpus", type=number(float, 0, 4096), default=1,
                        help="ray: CPUs each task asks for (default 1)")
    parser.add_argument("--task-gpus", type=number(float, 0, 64), default=0,
                        help="ray: GPUs each task asks for (default 0; 0.25 lets 4 tasks share a GPU)")


def _backend_check(args) -> None:
    if args.backend == "local" and (args.address or args.task_cpus != 1 or args.task_gpus):
        raise InputError("--address, --task-cpus and --task-gpus need --backend ray")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_cv(data, out, config, backend=None) -> None:
    from osteoscreen.evaluation.execution import LocalBackend, default_workers
    from osteoscreen.evaluation.runs import run_cross_validation

    backend = backend or LocalBackend(default_workers(config.train.mode, config.train.device, config.train.threads))
    outcome = run_cross_validation(data, out, config, progress=lambda name: progress(name, unit="step"),
                                   backend=backend, log=_log)
    if outcome.padded_patches:
        print(f"warning: {outcome.padded_patches} patch(es) reached past the image border and were "
              "reflect-padded", file=sys.stderr)
    print(outcome.table)
    print(f"report: {Path(out) / 'report.html'}\nmetrics: {Path(out) / 'metrics.json'}")


def cmd_cv(args) -> None:
    from osteoscreen.evaluation.execution import LocalBackend, RayBackend

    _backend_check(args)
    if args.backend == "ray" and args.workers is not None:
        raise InputError("--workers is for --backend local; with ray, --task-cpus sizes the tasks")
    config = _cv_config(args)
    if args.task_gpus and config.train.device != "cuda":
        raise InputError("--task-gpus needs --device cuda (a GPU visible to this machine's torch too)")
    backend = (RayBackend(args.address, args.task_cpus, args.task_gpus) if args.backend == "ray"
               else LocalBackend(args.workers) if args.workers else None)
    _run_cv(args.data, args.out, config, backend)


def _sex(text: str) -> str:
    from osteoscreen.data.dataset import parse_sex

    sex = parse_sex(text)
    if sex is None:
        raise argparse.ArgumentTypeError(f"expected F or M, got {text!r}")
    return sex


def cmd_train(args) -> None:
    from osteoscreen.model import train_model
    from osteoscreen.models.heads import head_of

    head, clinical = head_of(args.method)
    config = replace(_train_config(args, head=head), clinical=clinical)
    out = train_model(args.data, args.out, config, cv_run=args.cv, rule=_decision_rule(args), task=args.task,
                      progress=lambda name: progress(name, unit="step"))
    print(f"trained {args.method} ({config.mode}, {config.backbone}) on {args.data}; model: {out} "
          f"(weights.safetensors, model.json, README.md)")


def cmd_predict(args) -> None:
    from osteoscreen.data.dataset import load_dataset, single_image_dataset
    from osteoscreen.model import Model
    from osteoscreen.screening import predict

    model = Model.load(args.model)
    landmark_model = None
    if args.suggest is not None:
        from osteoscreen.landmarking.model import LandmarkModel

        landmark_model = LandmarkModel.load(args.suggest)
    source = Path(args.input)
    if not source.exists():
        raise InputError(f"{source}: no such dataset directory or image file")
    if source.is_dir():
        if args.landmarks:
            raise InputError("--landmarks is for a single image; a dataset directory has its landmarks.csv")
        dataset = load_dataset(source, require_labels=False, ignore_unknown_labels=True,
                               require_landmarks=landmark_model is None)
    elif args.landmarks is None and landmark_model is None:
        raise InputError(f"{source}: a single image needs --landmarks FILE (CSV landmark,x,y or JSON), or "
                         "--suggest LMODEL to have a landmark model place them")
    elif args.landmarks is not None:
        dataset = single_image_dataset(source, args.landmarks)
    else:
        from osteoscreen.data.dataset import Dataset, Subject

        dataset = Dataset(source.parent, [Subject(source.stem, source, None, np.full((8, 2), np.nan))])
    if not source.is_dir():
        dataset.subjects = [replace(s, age=args.age, sex=args.sex) for s in dataset.subjects]
    record = None
    if landmark_model is not None:
        from osteoscreen.landmarking.inputs import with_suggested_landmarks

        dataset, suggestions = with_suggested_landmarks(dataset, landmark_model,
                                                        progress("suggest", unit="radiograph"))
        record = {"path": str(args.suggest), "created": landmark_model.info["created"],
                  "training_data": landmark_model.info["training_data"]}
        flagged = sum(int(s.flagged.sum()) for s in suggestions.values())
        print(f"landmarks suggested for {len(suggestions)} radiograph(s) by {args.suggest}: {flagged} point(s) "
              "flagged; the outputs say which")
    _backend_check(args)
    resources = None
    if args.backend == "ray":
        from osteoscreen.distributed import TaskResources

        resources = TaskResources(args.task_cpus, args.task_gpus)
    path = predict(model, dataset, args.out, figures=not args.no_figures,
                   progress=progress("screening", unit="shard" if resources else "subject"), ray=resources,
                   address=args.address, landmark_model=record)
    print(f"screened {len(dataset.subjects)} radiograph(s) with {args.model}: {path}"
          + ("" if args.no_figures else f"; figures: {Path(args.out) / 'figures'}"))


def cmd_import_landmarks(args) -> None:
    from osteoscreen.data.annotations import import_landmarks

    count = import_landmarks(args.files, args.out, args.format)
    print(f"wrote the landmarks of {count} subject(s) to {args.out}")


#: The demo's methods: the paper's Table 1 (its two texture baselines, the CNN without and with attention) and the
#: majority floor, so that the demo stays within its few minutes on an ordinary 2-core CPU; `cv` runs every head.
DEMO_METHODS = ("majority", "knn-lbp", "ensemble-lbp", "concat", "group-attention")


def cmd_demo(args) -> None:
    from osteoscreen.data.phantom import PhantomConfig, synthesise
    from osteoscreen.evaluation.crossval import CVConfig
    from osteoscreen.patch_export import export_patches
    from osteoscreen.training.config import TrainConfig

    out = Path(args.out)
    data = out / "data"
    if not (data / "subjects.csv").exists():
        synthesise(data, PhantomConfig(), progress=progress("synth"))
    summary = export_patches(data, out / "patches", _patch_config(args), progress=progress("patches"))
    print(describe_dataset(summary.dataset))
    print(f"patches and montages: {out / 'patches'}; overview: {summary.overview}")
    _run_cv(data, out / "cv", CVConfig(methods=DEMO_METHODS, train=TrainConfig(patch=_patch_config(args))))
    print(f"the other heads (abmil, gated-abmil) too: osteoscreen cv {data} --out {out / 'cv-all'}")


def cmd_serve(args) -> None:
    import ipaddress
    import socket

    import uvicorn

    from osteoscreen.web.app import LOCAL_HOSTS, create_app

    try:
        address = ipaddress.ip_address(args.host)
        loopback, wildcard = address.is_loopback, address.is_unspecified
    except ValueError:
        loopback, wildcard = args.host == "localhost", False
    try:  # a port in use or an address this machine does not have is bad input, said before the app loads
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        with socket.create_server((args.host, args.port), family=family):
            pass
    except OSError as error:
        raise InputError(f"--host {args.host} --port {args.port}: cannot listen there ({error.strerror or error})"
                         ) from None
    hosts = ("*",) if wildcard and not args.allowed_host else (*LOCAL_HOSTS, args.host, *args.allowed_host)
    app = create_app(args.model, args.data, int(args.max_upload_mb * 2 ** 20), hosts, args.max_decodes,
                     args.landmarks_model)
    if not loopback:
        print(f"warning: serving on {args.host}: other machines can reach this page; it has no login"
              + (" (and it answers any Host name: name this machine with --allowed-host)" if "*" in hosts else ""),
              file=sys.stderr)
    print(f"osteoscreen: open http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def cmd_check_weights(args) -> None:
    import numpy as np

    from osteoscreen.models.backbones import Backbone, imagenet_top5

    if args.image is None:
        from skimage import data

        rgb, source = data.chelsea(), "scikit-image's data.chelsea() (a cat)"
    else:
        from PIL import Image

        try:
            with Image.open(args.image) as image:
                rgb, source = np.asarray(image.convert("RGB")), args.image
        except Exception as error:
            raise InputError(f"{args.image}: cannot read image ({error})") from None
    backbone = Backbone(args.backbone, args.weights)
    print(f"{args.backbone} ({backbone.weights_source['file'] or 'random init'}) on {source}: top-5 ImageNet classes")
    for rank, (index, name, probability) in enumerate(imagenet_top5(backbone, rgb), start=1):
        print(f"  {rank}. {name} (class {index}): {probability:.3f}")


def _landmark_config(args):
    from osteoscreen.landmarking.model import LandmarkConfig

    return LandmarkConfig(epochs=args.epochs, seed=args.seed)


def cmd_landmarks_train(args) -> None:
    from osteoscreen.landmarking.model import LandmarkModel
    from osteoscreen.outputs import output_folder

    with output_folder(args.out) as folder:
        model = LandmarkModel.fit(args.data, _landmark_config(args), lambda name: progress(name, unit="step"))
        model.write(folder)
    print(f"trained a landmark model on the {model.info['training_data']['n']} radiographs of {args.data}: "
          f"{args.out}")


def cmd_landmarks_suggest(args) -> None:
    from osteoscreen.landmarking.inputs import radiographs_in, suggest_all, write_suggestions
    from osteoscreen.landmarking.model import LandmarkModel
    from osteoscreen.outputs import output_file

    model = LandmarkModel.load(args.lmodel)
    out = output_file(args.out)
    results = suggest_all(model, radiographs_in(args.input), progress("suggest", unit="radiograph"))
    write_suggestions(out, results)
    flagged = sum(int(s.flagged.sum()) for _, s in results)
    print(f"suggested the landmarks of {len(results)} radiograph(s): {out}; {flagged} of {8 * len(results)} points "
          "flagged (columns flagged, reason): look at them, and correct them (osteoscreen serve --data DIR), before "
          "screening")


def cmd_landmarks_evaluate(args) -> None:
    from osteoscreen.landmarking.evaluation import evaluate_landmarks, evaluate_trained
    from osteoscreen.landmarking.model import LandmarkConfig, LandmarkModel
    from osteoscreen.landmarking.report import format_table, write_evaluation
    from osteoscreen.model import Model
    from osteoscreen.outputs import output_folder

    if args.lmodel is not None:
        given = [flag for flag, value, default in (("--train-size", args.train_size, None), ("--folds", args.folds, 5),
                                                   ("--epochs", args.epochs, LandmarkConfig.epochs),
                                                   ("--seed", args.seed, LandmarkConfig.seed)) if value != default]
        if given:
            raise InputError(f"{', '.join(given)}: for cross-validation; a trained --lmodel has learnt what it has "
                             "learnt")
    screening = None if args.model is None else Model.load(args.model)
    trained = None if args.lmodel is None else LandmarkModel.load(args.lmodel)
    steps = lambda name: progress(name, unit="fold" if name == "folds" else "radiograph")  # noqa: E731
    with output_folder(args.out, replaces="metrics.json") as folder:
        if trained is None:
            evaluation = evaluate_landmarks(args.data, args.folds, _landmark_config(args), screening, progress=steps,
                                            train_size=args.train_size)
        else:
            evaluation = evaluate_trained(trained, args.data, screening, progress=steps)
        write_evaluation(evaluation, folder)
    print(format_table(evaluation.summary()))
    print(f"report: {Path(args.out) / 'report.html'}; per point: {Path(args.out) / 'errors.csv'}")


def _add_landmark_commands(commands) -> None:
    from osteoscreen.landmarking.model import LandmarkConfig

    defaults = LandmarkConfig()
    landmarks = commands.add_parser("landmarks", help="suggest the 8 landmarks: train a suggester, suggest, "
                                    "evaluate")
    actions = landmarks.add_subparsers(dest="action", required=True, metavar="ACTION")

    def training_options(parser) -> None:
        parser.add_argument("--epochs", type=number(int, 1, 10_000), default=defaults.epochs,
                            help=f"passes over the training radiographs (default {defaults.epochs})")
        parser.add_argument("--seed", type=SEED, default=defaults.seed)

    train = actions.add_parser("train", help="learn the landmarks of an annotated dataset (its landmarks.csv)")
    train.add_argument("data", help="dataset directory with landmarks.csv (labels not needed)")
    train.add_argument("--out", required=True, help="landmark model folder to create (LMODEL)")
    training_options(train)
    train.set_defaults(run=cmd_landmarks_train)

    suggest = actions.add_parser("suggest", help="place the landmarks of new radiographs, each with a confidence")
    suggest.add_argument("lmodel", help="landmark model folder (osteoscreen landmarks train)")
    suggest.add_argument("input", help="an image, a dataset directory (subjects.csv) or a folder of images")
    suggest.add_argument("--out", required=True, help="landmarks.csv to write (with confidence, flagged, reason)")
    suggest.set_defaults(run=cmd_landmarks_suggest)

    evaluate = actions.add_parser("evaluate", help="k-fold cross-validated accuracy on an annotated dataset, or "
                                  "a trained model's on one it never saw (--lmodel)")
    evaluate.add_argument("data", help="dataset directory with landmarks.csv")
    evaluate.add_argument("--out", required=True, help="folder for report.html, metrics.json and errors.csv")
    evaluate.add_argument("--folds", type=number(int, 2, 10_000), default=5, help="folds (default 5)")
    evaluate.add_argument("--model", default=None, metavar="MODEL",
                          help="a screening model: also how far its p moves with suggested landmarks")
    evaluate.add_argument("--lmodel", default=None, metavar="LMODEL",
                          help="evaluate this trained landmark model on DATA (another cohort, device or format) "
                               "instead of cross-validating")
    evaluate.add_argument("--train-size", type=number(int, 2, 100_000), default=None, metavar="N",
                          help="each fold's model learns from N of its training radiographs (a learning curve)")
    training_options(evaluate)
    evaluate.set_defaults(run=cmd_landmarks_evaluate)


def build_parser() -> argparse.ArgumentParser:
    from osteoscreen.baselines import BASELINES, CLINICAL
    from osteoscreen.data.dataset import MAX_AGE
    from osteoscreen.evaluation.splits import PROTOCOLS
    from osteoscreen.models.backbones import BACKBONES
    from osteoscreen.models.heads import CLINICAL_SUFFIX

    parser = argparse.ArgumentParser(prog="osteoscreen", description="Research pre-screening of osteoporosis "
                                     "from dental panoramic radiographs (not a diagnostic device).")
    parser.add_argument("--version", action="version", version=f"osteoscreen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="generate the synthetic phantom cohort")
    synth.add_argument("out", help="output dataset directory")
    synth.add_argument("--n", type=number(int, 2, 100_000), default=70, help="number of subjects (default 70)")
    synth.add_argument("--positives", type=number(int, 0, 100_000), default=49,
                       help="osteoporosis subjects (default 49)")
    synth.add_argument("--osteopenia", type=number(int, 0, 100_000), default=0,
                       help="osteopenia subjects (T-score between -2.5 and -1; default 0: the paper's two classes)")
    synth.add_argument("--seed", type=SEED, default=0)
    synth.add_argument("--format", choices=["png", "png8", "jpeg", "dicom"], default="png",
                       help="png: 16-bit (default); png8: 8-bit; jpeg; dicom: 12 bits stored")
    synth.add_argument("--signal", default=None, metavar="GROUPS",
                       help="landmark groups that carry the signal, e.g. premolar,angle (default: all, graded)")
    synth.add_argument("--effect", type=number(float, 0, 10), default=1.0,
                       help="effect size: multiplies the signal of every group (0: a null cohort; default 1)")
    synth.add_argument("--age-signal", type=number(float, 0, 40), default=0.0, metavar="YEARS",
                       help="osteoporosis subjects are this much older on average (osteopenia half; default 0: age "
                            "independent of the class, 49-60 years)")
    synth.set_defaults(run=cmd_synth)

    validate = commands.add_parser("validate", help="check a dataset directory and summarise it")
    validate.add_argument("data")
    validate.set_defaults(run=cmd_validate)

    patches = commands.add_parser("patches", help="write the 8 landmark patches and montages of every subject")
    patches.add_argument("data")
    patches.add_argument("--out", required=True)
    _add_patch_options(patches)
    patches.set_defaults(run=cmd_patches)

    cv = commands.add_parser("cv", help="cross-validate every method on a dataset (resumable)")
    cv.add_argument("data")
    cv.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    cv.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join((*BASELINES, *HEADS))} "
                    f"(default: these), {CLINICAL} (age and sex only) and every head with {CLINICAL_SUFFIX}")
    cv.add_argument("--protocol", choices=list(PROTOCOLS), default="loo")
    cv.add_argument("--folds", type=number(int, 2, 10_000), default=5, help="kfold: folds per repeat (default 5)")
    cv.add_argument("--repeats", type=number(int, 1, 10_000), default=10, help="kfold: repeats (default 10)")
    cv.add_argument("--workers", type=number(int, 1, 1024), default=None,
                    help="fine-tune: folds trained in parallel processes (default: one per 4 cores; with "
                         "--device cuda, 8 processes sharing the GPU)")
    cv.add_argument("--prevalence", type=number(float, 0.001, 0.999), default=None,
                    help="osteoporosis prevalence of the population to be screened, for the decision curves "
                         "(default: the cohort's; an enriched research cohort overstates the benefit)")
    cv.add_argument("--leave-pair-out", action="store_true",
                    help="leave-one-out, frozen mode: also the leave-pair-out AUROC, unbiased where pooled "
                         "leave-one-out scores are not (one fit per osteoporosis-normal pair; about 2 min per CNN "
                         "head for 70 subjects on 2 cores)")
    cv.add_argument("--seeds", default=None,
                    help="comma-separated seeds (e.g. 0,1,2,3,4): the whole run once per seed; metrics.json and the "
                         "report give each seed and the spread across seeds (default: --seed)")
    _add_backend_options(cv, "(method, seed, fold) job")
    _add_training_options(cv)
    cv.set_defaults(run=cmd_cv)

    train = commands.add_parser("train", help="train one method on every subject of a dataset and save the model")
    train.add_argument("data")
    train.add_argument("--out", required=True, help="model directory to create")
    train.add_argument("--method", choices=[*HEADS, *CLINICAL_HEADS], default="group-attention")
    train.add_argument("--cv", default=None, metavar="RUN",
                       help="a cv run on the same data: its metrics for the method go into the model card")
    _add_training_options(train)
    train.set_defaults(run=cmd_train)

    predict = commands.add_parser("predict", help="screen new radiographs with a trained model")
    predict.add_argument("model", help="model directory written by `osteoscreen train`")
    predict.add_argument("input", help="a dataset directory (labels optional), or one image with --landmarks")
    predict.add_argument("--landmarks", default=None, help="landmarks of the single image: CSV landmark,x,y or JSON")
    predict.add_argument("--out", required=True)
    predict.add_argument("--suggest", default=None, metavar="LMODEL",
                         help="a landmark model (osteoscreen landmarks train) places the landmarks a radiograph lacks "
                              "(a single image without --landmarks; a dataset's subjects without landmarks.csv rows)")
    predict.add_argument("--no-figures", action="store_true", help="write predictions.csv only")
    predict.add_argument("--age", type=number(float, 0, MAX_AGE), default=None,
                         help="single image: the patient's age in years (models trained with +clinical need it)")
    predict.add_argument("--sex", type=_sex, default=None, help="single image: F or M (+clinical models need it)")
    _add_backend_options(predict, "shard of radiographs")
    predict.set_defaults(run=cmd_predict)

    annotations = commands.add_parser("import-landmarks",
                                      help="convert LabelMe or COCO keypoint annotations into landmarks.csv")
    annotations.add_argument("files", nargs="+", help="LabelMe JSON files (one per image) or a COCO JSON file")
    annotations.add_argument("--out", required=True, help="landmarks.csv to write")
    annotations.add_argument("--format", choices=["auto", "labelme", "coco"], default="auto")
    annotations.set_defaults(run=cmd_import_landmarks)

    check = commands.add_parser("check-weights", help="print a backbone's top-5 ImageNet classes for an image")
    check.add_argument("image", nargs="?", default=None, help="natural RGB image (default: a cat from scikit-image)")
    check.add_argument("--backbone", choices=list(BACKBONES), default="efficientnet_lite0")
    check.add_argument("--weights", default="imagenet", help="imagenet, none, a path or a URL")
    check.set_defaults(run=cmd_check_weights)

    serve = commands.add_parser("serve", help="a local web page: place landmarks and screen, or annotate a dataset")
    serve.add_argument("--model", default=None, help="model directory: screening mode")
    serve.add_argument("--data", default=None, help="dataset directory: annotation mode (saves its landmarks.csv)")
    serve.add_argument("--landmarks-model", default=None, metavar="LMODEL",
                       help="a landmark model (osteoscreen landmarks train): the page's Suggest button places the 8 "
                            "points for you to check (either mode)")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    serve.add_argument("--port", type=number(int, 0, 65535), default=8000)
    serve.add_argument("--max-upload-mb", type=number(float, 0.001, 65536), default=64,
                       help="largest upload accepted (default 64 MB)")
    serve.add_argument("--max-decodes", type=number(int, 1, 64), default=2,
                       help="radiographs processed at once; more requests get 503 (default 2)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="a further host name the page may be reached by (repeatable); requests addressed to "
                            "any other name are refused (DNS rebinding)")
    serve.set_defaults(run=cmd_serve)

    _add_landmark_commands(commands)

    demo = commands.add_parser("demo", help="synthesise the default cohort and run the main job on it")
    demo.add_argument("--out", default="runs/demo")
    _add_patch_options(demo)
    demo.set_defaults(run=cmd_demo)
    return parser


def show_warnings_as_lines(wording: Callable[[str], str] = str) -> None:
    """Print every warning as one line `osteoscreen: warning: ...` on stderr (worded by `wording`), without Python's
    source lines; every InputWarning is shown (each names its file), not once per place."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        text = wording(" ".join(str(message).split()))
        print(f"osteoscreen: warning: {text}", file=sys.stderr, flush=True)

    warnings.simplefilter("always", InputWarning)
    warnings.showwarning = show


def keep_matplotlib_cache_out_of_home() -> None:
    """The command line writes nothing outside its output folder but temporary files: matplotlib's font cache goes
    to a per-user temporary folder instead of ~/.cache or ~/.config (a user's own MPLCONFIGDIR is kept)."""
    import os
    import tempfile

    if "MPLCONFIGDIR" not in os.environ:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        os.environ["MPLCONFIGDIR"] = os.path.join(tempfile.gettempdir(), f"osteoscreen-matplotlib-{uid}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (partial outputs removed) runs the same way."""


def terminate_like_interrupt() -> None:
    """Turn SIGTERM (a service manager, `kill`, a batch system's time limit) into Terminated in the main thread."""
    import signal
    import threading

    def stop(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


#: Storage failures reported as one line with the path: a full disk (exit 1: the command was right) or a
#: location that cannot be written (exit 2: choose another).
STORAGE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                  errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                  errno.EROFS: "read-only file system"}


#: Library arguments whose command-line flag is not their name with dashes (the rest map by the parser's dests).
FLAG_OF = {"image_format": "--format", "calibration": "--calibrate", "groups": "--signal", "model_dir": "--model",
           "data_dir": "--data", "landmark_model_dir": "--landmarks-model"}
#: `name: ` at the start of a message, or `name=value` standing alone (not inside a path or URL such as seed=3/x.png).
ARGUMENT = re.compile(r"^([a-z][a-z0-9_]*)(?=: )|(?<![\w/.\-=?&])([a-z][a-z0-9_]*)=(['\"]?)([^'\"\s,;)]*)\3")


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{argument name: its long flag} for every option of the parser and its subcommands, and FLAG_OF."""
    flags: dict[str, str] = {}
    pending = [parser]
    while pending:
        for action in pending.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += list(action.choices.values())
            elif action.option_strings and action.option_strings[-1].startswith("--"):
                positive = isinstance(action, argparse.BooleanOptionalAction)  # --x, not --no-x
                flags.setdefault(action.dest, action.option_strings[0 if positive else -1])
    return flags | FLAG_OF


def in_flags(message: str, flags: dict[str, str]) -> str:
    """A library message in the command line's terms. The library names arguments as Python does (`folds: ...` at
    the start of a message, `folds=1` inside it); each one the command line has a flag for becomes that flag."""
    def flag(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in flags:
            return match.group(0)
        value = match.group(4)
        return flags[name] if match.group(1) or not value else f"{flags[name]} {value}"

    return ARGUMENT.sub(flag, message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (2), --help and --version (0): argparse has printed them
        return int(stop.code or 0)
    flags = functools.cache(lambda: flags_of(parser))  # built only when a message is printed
    keep_freed_memory()
    show_warnings_as_lines(lambda text: in_flags(text, flags()))
    terminate_like_interrupt()
    keep_matplotlib_cache_out_of_home()
    try:
        args.run(args)
    except InputError as error:
        for line in str(error).splitlines():
            print(f"osteoscreen: error: {in_flags(line, flags())}", file=sys.stderr)
        return 2
    except Terminated:
        print("osteoscreen: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("osteoscreen: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a storage failure, or an internal error: one line, no traceback unless asked for
        if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
            where = f"{error.filename}: " if error.filename else ""
            print(f"osteoscreen: error: {where}{STORAGE_ERRORS[error.errno]} ({error.strerror}); nothing was left "
                  "half-written", file=sys.stderr)
            return 1 if error.errno in (errno.ENOSPC, errno.EDQUOT) else 2
        print(f"osteoscreen: internal error: {type(error).__name__}: {error} "
              "(set OSTEOSCREEN_DEBUG=1 for the traceback)", file=sys.stderr)
        import os

        if os.environ.get("OSTEOSCREEN_DEBUG"):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
