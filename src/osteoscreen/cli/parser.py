"""`build_parser`: the command line of README "Command-line tour"; one function per command adds its flags (with
the shared ones of cli.options) and its `cmd_*` function (cli.commands)."""

from __future__ import annotations

import argparse

from osteoscreen.cli.commands import (
    cmd_check_weights,
    cmd_cv,
    cmd_demo,
    cmd_export,
    cmd_import_landmarks,
    cmd_landmarks_evaluate,
    cmd_landmarks_suggest,
    cmd_landmarks_train,
    cmd_patches,
    cmd_predict,
    cmd_send,
    cmd_serve,
    cmd_synth,
    cmd_train,
    cmd_validate,
)
from osteoscreen.cli.options import (
    SEED,
    add_backend_options,
    add_pacs_options,
    add_patch_options,
    add_training_options,
    number,
    sex_code,
)
from osteoscreen.core.version import __version__


def _landmarks(landmarks: argparse.ArgumentParser) -> None:
    """`landmarks train|suggest|evaluate`: the landmark suggester's commands."""
    from osteoscreen.landmarking.model import LandmarkConfig

    defaults = LandmarkConfig()
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


def _synth(synth: argparse.ArgumentParser) -> None:
    """`synth`: the phantom cohort's size, classes, format and signal."""
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


def _validate(validate: argparse.ArgumentParser) -> None:
    """`validate DATA`."""
    validate.add_argument("data")
    validate.set_defaults(run=cmd_validate)


def _patches(patches: argparse.ArgumentParser) -> None:
    """`patches DATA --out`."""
    patches.add_argument("data")
    patches.add_argument("--out", required=True)
    add_patch_options(patches)
    patches.set_defaults(run=cmd_patches)


def _cv(cv: argparse.ArgumentParser) -> None:
    """`cv DATA --out`: methods, protocol, seeds, backend and the training flags."""
    from osteoscreen.evaluation.splits import PROTOCOLS
    from osteoscreen.methods.baselines import BASELINES, CLINICAL
    from osteoscreen.models.heads import CLINICAL_SUFFIX, HEADS

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
    add_backend_options(cv, "(method, seed, fold) job")
    add_training_options(cv)
    cv.set_defaults(run=cmd_cv)


def _train(train: argparse.ArgumentParser) -> None:
    """`train DATA --out`: one method, the training flags."""
    from osteoscreen.models.heads import CLINICAL_HEADS, HEADS

    train.add_argument("data")
    train.add_argument("--out", required=True, help="model directory to create")
    train.add_argument("--method", choices=[*HEADS, *CLINICAL_HEADS], default="group-attention")
    train.add_argument("--cv", default=None, metavar="RUN",
                       help="a cv run on the same data: its metrics for the method go into the model card")
    add_training_options(train)
    train.set_defaults(run=cmd_train)


def _predict(predict: argparse.ArgumentParser) -> None:
    """`predict MODEL INPUT --out`: landmarks or a suggester, covariates of a single image, backend."""
    from osteoscreen.data.dataset import MAX_AGE

    predict.add_argument("model", help="model directory written by `osteoscreen train` (with --runtime onnx: a "
                                       "folder written by `osteoscreen export`)")
    predict.add_argument("input", help="a dataset directory (labels optional), or one image with --landmarks")
    predict.add_argument("--landmarks", default=None, help="landmarks of the single image: CSV landmark,x,y or JSON")
    predict.add_argument("--out", required=True)
    predict.add_argument("--suggest", default=None, metavar="LMODEL",
                         help="a landmark model (osteoscreen landmarks train) places the landmarks a radiograph lacks "
                              "(a single image without --landmarks; a dataset's subjects without landmarks.csv rows)")
    predict.add_argument("--no-figures", action="store_true", help="write predictions.csv only")
    predict.add_argument("--dicom-out", action="store_true",
                         help="DICOM inputs: also a DICOM SR and a key image per radiograph, in its study "
                              "(dicom/; these carry the patient's identity)")
    add_pacs_options(predict)
    predict.add_argument("--age", type=number(float, 0, MAX_AGE), default=None,
                         help="single image: the patient's age in years (models trained with +clinical need it)")
    predict.add_argument("--sex", type=sex_code, default=None, help="single image: F or M (+clinical models need it)")
    predict.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                         help="torch (default) or onnx: the exported graph in onnxruntime (pip install "
                              "'osteoscreen[onnx]')")
    add_backend_options(predict, "shard of radiographs")
    predict.set_defaults(run=cmd_predict)


def _export(export: argparse.ArgumentParser) -> None:
    """`export MODEL --out`."""
    export.add_argument("model", help="model directory written by `osteoscreen train`")
    export.add_argument("--out", required=True, help="folder to write (absent or empty)")
    export.set_defaults(run=cmd_export)


def _send(send: argparse.ArgumentParser) -> None:
    """`send RUN --send|--stow`."""
    send.add_argument("run_dir", metavar="RUN", help="a predict --dicom-out output folder")
    add_pacs_options(send)
    send.set_defaults(run=cmd_send)


def _import_landmarks(annotations: argparse.ArgumentParser) -> None:
    """`import-landmarks FILES --out`."""
    annotations.add_argument("files", nargs="+", help="LabelMe JSON files (one per image) or a COCO JSON file")
    annotations.add_argument("--out", required=True, help="landmarks.csv to write")
    annotations.add_argument("--format", choices=["auto", "labelme", "coco"], default="auto")
    annotations.set_defaults(run=cmd_import_landmarks)


def _check_weights(check: argparse.ArgumentParser) -> None:
    """`check-weights [IMAGE]`."""
    from osteoscreen.models.backbones import BACKBONES

    check.add_argument("image", nargs="?", default=None, help="natural RGB image (default: a cat from scikit-image)")
    check.add_argument("--backbone", choices=list(BACKBONES), default="efficientnet_lite0")
    check.add_argument("--weights", default="imagenet", help="imagenet, none, a path or a URL")
    check.set_defaults(run=cmd_check_weights)


def _serve(serve: argparse.ArgumentParser) -> None:
    """`serve`: the modes, the landmark model, the address and the limits."""
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
    add_pacs_options(serve)
    serve.set_defaults(run=cmd_serve)


def _demo(demo: argparse.ArgumentParser) -> None:
    """`demo`."""
    demo.add_argument("--out", default="runs/demo")
    add_patch_options(demo)
    demo.set_defaults(run=cmd_demo)


#: Every command, in the order of `osteoscreen --help`: its name, its one-line help and the function that adds its
#: flags and `cmd_*` function to its subparser.
COMMANDS = (
    ("synth", "generate the synthetic phantom cohort", _synth),
    ("validate", "check a dataset directory (every radiograph, its contrast and landmarks) and summarise it",
     _validate),
    ("patches", "write the 8 landmark patches and montages of every subject", _patches),
    ("cv", "cross-validate every method on a dataset (resumable)", _cv),
    ("train", "train one method on every subject of a dataset and save the model", _train),
    ("predict", "screen new radiographs with a trained model", _predict),
    ("export", "write a model as ONNX (model.onnx) with its screening contract (screening.json), for "
               "onnxruntime", _export),
    ("send", "send a predict run's DICOM results to a PACS (what it has not accepted yet)", _send),
    ("import-landmarks", "convert LabelMe or COCO keypoint annotations into landmarks.csv", _import_landmarks),
    ("check-weights", "print a backbone's top-5 ImageNet classes for an image", _check_weights),
    ("serve", "a local web page: place landmarks and screen, or annotate a dataset", _serve),
    ("landmarks", "suggest the 8 landmarks: train a suggester, suggest, evaluate", _landmarks),
    ("demo", "synthesise the default cohort and run the main job on it", _demo),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line: --version, then each of COMMANDS; with `command` (the name the arguments start with), only
    that command's flags are added (each command's own imports, torch among them for most, load only when it
    runs: `osteoscreen synth --help` answers in 0.2 s instead of 2.4 s), the others are listed with their help."""
    parser = argparse.ArgumentParser(prog="osteoscreen", description="Research pre-screening of osteoporosis "
                                     "from dental panoramic radiographs (not a diagnostic device).")
    parser.add_argument("--version", action="version", version=f"osteoscreen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, add in COMMANDS:
        subparser = commands.add_parser(name, help=summary)
        if command in (None, name):
            add(subparser)
    return parser
