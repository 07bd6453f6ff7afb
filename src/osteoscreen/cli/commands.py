"""One `cmd_*` function per command: it turns the parsed arguments into the library's configurations
(cli.options) and calls the modules that do the work, importing them on use so that `osteoscreen --help` stays fast."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from osteoscreen.cli.options import (
    backend_check,
    cv_config,
    decision_rule,
    pacs_destination,
    patch_config,
    send_and_report,
    train_config,
)
from osteoscreen.core.errors import InputError


def progress(description: str, unit: str = "subject") -> Callable:
    """A progress-bar wrapper for an iterable (to stderr, so stdout stays clean)."""
    return lambda iterable: tqdm(iterable, desc=description, unit=unit, file=sys.stderr, leave=False,
                                 dynamic_ncols=True)


def cmd_synth(args) -> None:
    from osteoscreen.data.phantom.synthesis import PhantomConfig, synthesise

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

    from osteoscreen.core.landmarks import WHO_CLASSES

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
    from osteoscreen.data.patches import PatchConfig
    from osteoscreen.data.subject_patches import check_screenable

    dataset = load_dataset(args.data, on_image=lambda subject, radiograph: check_screenable(
        subject, radiograph, PatchConfig()))  # the default patches: 100 px, the paper's
    print(f"{args.data}: valid\n{describe_dataset(dataset)}")


def cmd_patches(args) -> None:
    from osteoscreen.reporting.patch_export import export_patches

    summary = export_patches(args.data, args.out, patch_config(args), progress=progress("patches"))
    if summary.padded_patches:
        print(f"warning: {summary.padded_patches} patch(es) reached past the image border and were "
              "reflect-padded", file=sys.stderr)
    print(f"wrote patches and montages of {len(summary.dataset.subjects)} subjects to {args.out} (index.csv names "
          f"each subject's files); overview: {summary.overview}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_cv(data, out, config, backend=None) -> None:
    from osteoscreen.evaluation.execution import LocalBackend, default_workers
    from osteoscreen.reporting.runs import run_cross_validation

    backend = backend or LocalBackend(default_workers(config.train.mode, config.train.device, config.train.threads))
    outcome = run_cross_validation(data, out, config, progress=lambda name: progress(name, unit="step"),
                                   backend=backend, log=log)
    if outcome.padded_patches:
        print(f"warning: {outcome.padded_patches} patch(es) reached past the image border and were "
              "reflect-padded", file=sys.stderr)
    print(outcome.table)
    print(f"report: {Path(out) / 'report.html'}\nmetrics: {Path(out) / 'metrics.json'}")


def cmd_cv(args) -> None:
    from osteoscreen.evaluation.execution import LocalBackend, RayBackend

    backend_check(args)
    if args.backend == "ray" and args.workers is not None:
        raise InputError("--workers is for --backend local; with ray, --task-cpus sizes the tasks")
    config = cv_config(args)
    if args.task_gpus and config.train.device != "cuda":
        raise InputError("--task-gpus needs --device cuda (a GPU visible to this machine's torch too)")
    backend = (RayBackend(args.address, args.task_cpus, args.task_gpus) if args.backend == "ray"
               else LocalBackend(args.workers) if args.workers else None)
    _run_cv(args.data, args.out, config, backend)


def cmd_train(args) -> None:
    from osteoscreen.deploy.model import train_model
    from osteoscreen.models.heads import head_of

    head, clinical = head_of(args.method)
    config = replace(train_config(args, head=head), clinical=clinical)
    out = train_model(args.data, args.out, config, cv_run=args.cv, rule=decision_rule(args), task=args.task,
                      progress=lambda name: progress(name, unit="step"))
    print(f"trained {args.method} ({config.mode}, {config.backbone}) on {args.data}; model: {out} "
          f"(weights.safetensors, model.json, README.md)")


def cmd_predict(args) -> None:
    from osteoscreen.data.dataset import load_dataset, single_image_dataset
    from osteoscreen.data.subject_patches import check_screenable
    from osteoscreen.deploy.model import Model
    from osteoscreen.deploy.screening import predict

    if args.runtime == "onnx":
        from osteoscreen.deploy.onnx_model import OnnxModel

        model = OnnxModel.load(args.model)
    else:
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
                               require_landmarks=landmark_model is None,
                               on_image=lambda subject, radiograph: check_screenable(subject, radiograph,
                                                                                     model.config.patch))
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
    backend_check(args)
    destination = pacs_destination(args)
    if destination is not None and not args.dicom_out:
        raise InputError("--send and --stow send the DICOM results: add --dicom-out")
    resources = None
    if args.backend == "ray":
        from osteoscreen.core.distributed import TaskResources

        resources = TaskResources(args.task_cpus, args.task_gpus)
    writers = []
    if args.dicom_out:
        from osteoscreen.deploy.dicom_results import DicomResults

        writers.append(DicomResults())
    path = predict(model, dataset, args.out, figures=not args.no_figures,
                   progress=progress("screening", unit="shard" if resources else "subject"), ray=resources,
                   address=args.address, landmark_model=record, writers=writers)
    print(f"screened {len(dataset.subjects)} radiograph(s) with {args.model}: {path}"
          + ("" if args.no_figures else f"; figures: {Path(args.out) / 'figures'}")
          + (f"; DICOM SR and key images: {Path(args.out) / 'dicom'}" if args.dicom_out else ""))
    if destination is not None:
        send_and_report(args.out, destination, progress("sending", unit="file"))


def cmd_export(args) -> None:
    from osteoscreen.deploy.onnx_export import CONTRACT_FILE, ONNX_FILE, export_model

    out = export_model(args.model, args.out)
    print(f"exported {args.model} to {out}: {ONNX_FILE} (the network, onnxruntime on any platform) and "
          f"{CONTRACT_FILE} (inputs, outputs, patch preparation, decision rule); screen with "
          f"`osteoscreen predict {out} DATA --runtime onnx --out OUT`")


def cmd_send(args) -> None:
    destination = pacs_destination(args)
    if destination is None:
        raise InputError("send: name the PACS with --send AET@HOST:PORT or --stow URL")
    send_and_report(args.run_dir, destination, progress("sending", unit="file"))


def cmd_import_landmarks(args) -> None:
    from osteoscreen.data.annotations import import_landmarks

    count = import_landmarks(args.files, args.out, args.format)
    print(f"wrote the landmarks of {count} subject(s) to {args.out}")


#: The demo's methods: the paper's Table 1 (its two texture baselines, the CNN without and with attention) and the
#: majority floor, so that the demo stays within its few minutes on an ordinary 2-core CPU; `cv` runs every head.
DEMO_METHODS = ("majority", "knn-lbp", "ensemble-lbp", "concat", "group-attention")


def cmd_demo(args) -> None:
    from osteoscreen.data.phantom.synthesis import PhantomConfig, synthesise
    from osteoscreen.evaluation.crossval import CVConfig
    from osteoscreen.reporting.patch_export import export_patches
    from osteoscreen.training.config import TrainConfig

    out = Path(args.out)
    data = out / "data"
    if not (data / "subjects.csv").exists():
        synthesise(data, PhantomConfig(), progress=progress("synth"))
    summary = export_patches(data, out / "patches", patch_config(args), progress=progress("patches"))
    print(describe_dataset(summary.dataset))
    print(f"patches and montages: {out / 'patches'}; overview: {summary.overview}")
    _run_cv(data, out / "cv", CVConfig(methods=DEMO_METHODS, train=TrainConfig(patch=patch_config(args))))
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
    destination = pacs_destination(args)
    if destination is not None and args.model is None:
        raise InputError("--send and --stow send a screening's DICOM results: add --model MODEL")
    app = create_app(args.model, args.data, int(args.max_upload_mb * 2 ** 20), hosts, args.max_decodes,
                     args.landmarks_model, destination)
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
    from osteoscreen.io.outputs import output_folder
    from osteoscreen.landmarking.model import LandmarkModel

    with output_folder(args.out) as folder:
        model = LandmarkModel.fit(args.data, _landmark_config(args), lambda name: progress(name, unit="step"))
        model.write(folder)
    print(f"trained a landmark model on the {model.info['training_data']['n']} radiographs of {args.data}: "
          f"{args.out}")


def cmd_landmarks_suggest(args) -> None:
    from osteoscreen.io.outputs import output_file
    from osteoscreen.landmarking.inputs import radiographs_in, suggest_all, write_suggestions
    from osteoscreen.landmarking.model import LandmarkModel

    model = LandmarkModel.load(args.lmodel)
    out = output_file(args.out)
    results = suggest_all(model, radiographs_in(args.input), progress("suggest", unit="radiograph"))
    write_suggestions(out, results)
    flagged = sum(int(s.flagged.sum()) for _, s in results)
    print(f"suggested the landmarks of {len(results)} radiograph(s): {out}; {flagged} of {8 * len(results)} points "
          "flagged (columns flagged, reason): look at them, and correct them (osteoscreen serve --data DIR), before "
          "screening")


def cmd_landmarks_evaluate(args) -> None:
    from osteoscreen.deploy.model import Model
    from osteoscreen.io.outputs import output_folder
    from osteoscreen.landmarking.evaluation import evaluate_landmarks, evaluate_trained
    from osteoscreen.landmarking.model import LandmarkConfig, LandmarkModel
    from osteoscreen.landmarking.report import format_table, write_evaluation

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
