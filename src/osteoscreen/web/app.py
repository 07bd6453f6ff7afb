"""The FastAPI application behind `osteoscreen serve`: one page and a JSON API.

Screening (a model): POST /api/render turns an uploaded radiograph into a PNG the page can show; POST
/api/screen takes the radiograph again with its 8 landmarks and returns p(osteoporosis), the decision, the
attention per group and the 8 patches. The server keeps nothing between requests: the page holds the file.
Annotation (a dataset directory): GET /api/subjects, GET /api/subjects/{index}/image and /landmarks, and
PUT /api/subjects/{index}/landmarks, which saves landmarks.csv at once. Subjects are addressed by their index in
subjects.csv, so no path from a request reaches the filesystem; the page's three files are fixed routes.
DICOM results (a model and a DICOM upload): POST /api/dicom/sr and /api/dicom/key-image answer the screening's
Structured Report and key image (deploy.dicom_results, with the upload's patient and study: the only answers that
carry them) as a download; with a PACS configured (`serve --send` or `--stow`), POST /api/send sends both there
and answers what the PACS accepted.
Suggestion (a landmark model, in either mode): POST /api/suggest (an uploaded radiograph) and GET
/api/subjects/{index}/suggestion give the 8 suggested points with their confidences, flags and warnings; the
page shows them for the user to check and correct, and nothing is saved or screened until the user says so.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import GROUPS, LANDMARKS
from osteoscreen.data.dataset import Subject
from osteoscreen.io.imageio import image_kind
from osteoscreen.io.jsoninput import parse_json
from osteoscreen.io.png import png_data_uri
from osteoscreen.web.annotations import AnnotationStore, parse_landmarks
from osteoscreen.web.guards import BodySizeLimit, InternalErrors, LocalOrigin
from osteoscreen.web.uploads import (
    DecodeSlots,
    UploadError,
    decode_dicom_upload,
    decode_upload,
    display_png,
    parse_covariates,
)

if TYPE_CHECKING:
    from osteoscreen.deploy.model import Model, Screening
    from osteoscreen.deploy.pacs import Destination
    from osteoscreen.deploy.prediction_writers import Screened
    from osteoscreen.io.imageio import Radiograph
    from osteoscreen.landmarking.model import LandmarkModel

DEFAULT_MAX_UPLOAD_MB = 64
DEFAULT_MAX_DECODES = 2
#: Largest JSON body or landmarks field: 8 landmarks need a few hundred bytes.
MAX_JSON_BYTES = 64 * 2**10
#: Host names the server answers by default: this machine's loopback names.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
GROUP_NAMES = {"condyle": "mandibular condyle", "angle": "angle of the mandible",
               "premolar": "mandibular premolar region", "tuberosity": "maxillary tuberosity"}
#: Where each landmark lies on the page's schematic panoramic radiograph, as fractions of its width and height
#: (patient's right on the image's left).
DIAGRAM = {"condyle": (0.16, 0.3), "angle": (0.2, 0.72), "premolar": (0.375, 0.8), "tuberosity": (0.28, 0.45)}
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}
DISCLAIMER = "Research pre-screening, not a diagnosis; it does not replace DXA."
UPLOAD_ID = "upload"  # an uploaded radiograph's subject id and file-name stem (the upload's name is never used)
DICOM_PARTS = ("sr", "key-image")  # POST /api/dicom/{part}: the Structured Report, the key image


def _landmark_info() -> list[dict]:
    info = []
    for name in LANDMARKS:
        group, side = name.split("_")
        u, v = DIAGRAM[group]
        info.append({"name": name, "group": group, "side": side,
                     "label": f"{side} {GROUP_NAMES[group]}",
                     "hint": f"patient's {side}: the image's {'left' if side == 'right' else 'right'}",
                     "diagram": [u if side == "right" else 1 - u, v]})
    return info


def suggestion_response(model: LandmarkModel, radiograph: Radiograph, what: str) -> dict:
    """The landmark model's suggestion for one radiograph as the page takes it: landmarks {name: [x, y]} px,
    points (one record per landmark: confidence, flagged, reason) and the warnings (one line each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suggestion = model.suggest(radiograph, what=what)
    return {"landmarks": {name: [round(x, 2), round(y, 2)] for name, (x, y) in suggestion.as_dict().items()},
            "points": suggestion.records(), "warnings": [str(w.message).splitlines()[0] for w in caught]}


def _data_uri(pixels) -> str:
    return png_data_uri(display_png(pixels))


@dataclass
class Services:
    """What the routes serve from: the loaded models and annotation store (each None when its mode is off), the
    decode slots, the upload limit in bytes and the PACS that DICOM results are sent to (None: no sending)."""

    screening_model: Model | None
    landmark_model: LandmarkModel | None
    store: AnnotationStore | None
    slots: DecodeSlots
    max_upload_bytes: int
    destination: Destination | None = None

    def model(self) -> Model:
        if self.screening_model is None:
            raise UploadError(404, "screening is off: start the server with --model MODEL")
        return self.screening_model

    def annotations(self) -> AnnotationStore:
        if self.store is None:
            raise UploadError(404, "annotation is off: start the server with --data DATA")
        return self.store

    def suggester(self) -> LandmarkModel:
        if self.landmark_model is None:
            raise UploadError(404, "suggestion is off: start the server with --landmarks-model LMODEL")
        return self.landmark_model

    def pacs(self) -> Destination:
        if self.destination is None:
            raise UploadError(404, "sending is off: start the server with --send AET@HOST:PORT or --stow URL")
        return self.destination

    def subject(self, index: int) -> Subject:
        subject = self.annotations().subject(index)
        if subject is None:
            raise UploadError(404, f"no subject with index {index}")
        return subject

    def info(self) -> dict:
        """GET /api/info: the modes on, the models' records the page shows, the landmarks and the limits."""
        model = suggester = None
        if self.screening_model is not None:
            record = self.screening_model.info
            model = {"method": record["method"], "mode": record["mode"], "created": record["created"],
                     "threshold": record["threshold"], "decision_rule": record["decision_rule"]["rule"],
                     "covariates": record["covariates"],
                     "synthetic_training_data": bool(record["training_data"].get("synthetic"))}
        if self.landmark_model is not None:
            record = self.landmark_model.info
            suggester = {"created": record["created"], "training_radiographs": record["training_data"]["n"],
                         "synthetic_training_data": bool(record["training_data"].get("synthetic"))}
        return {"screening": self.screening_model is not None, "annotation": self.store is not None,
                "model": model, "suggest": self.landmark_model is not None, "landmark_model": suggester,
                "pacs": None if self.destination is None else self.destination.address,
                "landmarks": _landmark_info(), "groups": list(GROUPS), "max_upload_bytes": self.max_upload_bytes,
                "disclaimer": DISCLAIMER}


def create_app(model_dir: str | Path | None = None, data_dir: str | Path | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2 ** 20, hosts: tuple[str, ...] = LOCAL_HOSTS,
               max_decodes: int = DEFAULT_MAX_DECODES, landmark_model_dir: str | Path | None = None,
               destination: Destination | None = None) -> FastAPI:
    """The application for a model directory (screening), a dataset directory (annotation), or both; with a
    landmark model directory (osteoscreen landmarks train) the page can suggest the 8 points in either mode.

    hosts: the host names requests may be addressed to (guards.LocalOrigin); max_decodes: radiographs processed
    at once (more get 503); destination: the PACS the page's "Send to PACS" sends DICOM results to (deploy.pacs)."""
    from osteoscreen.deploy.model import Model
    from osteoscreen.landmarking.model import LandmarkModel

    if model_dir is None and data_dir is None:
        raise InputError("needs model_dir= (a screening model: screening), data_dir= (a dataset: annotation) or both")
    services = Services(Model.load(model_dir) if model_dir is not None else None,
                        LandmarkModel.load(landmark_model_dir) if landmark_model_dir is not None else None,
                        AnnotationStore(data_dir) if data_dir is not None else None,  # last: it locks the folder
                        DecodeSlots(max_decodes), max_upload_bytes, destination)
    app = FastAPI(title="osteoscreen", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes)  # innermost: sees the body first
    app.add_middleware(InternalErrors)
    app.add_middleware(LocalOrigin, hosts=hosts)  # outermost: refuses before anything is read
    _add_error_answers(app)
    _add_page(app)
    app.get("/api/info")(services.info)
    _add_screening(app, services)
    _add_dicom_results(app, services)
    _add_annotation(app, services)
    return app


def _add_error_answers(app: FastAPI) -> None:
    """Every refusal as JSON {"error": one line} with its status: an upload's own, 422 for bad input or a bad form
    field, and FastAPI's HTTP errors (404 for an unknown route) in the same shape."""

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError):
        return JSONResponse({"error": str(error).splitlines()[0]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)


def _add_page(app: FastAPI) -> None:
    """The page's three fixed files (PAGE_FILES), read once from the package."""
    for route, (name, media) in PAGE_FILES.items():
        body = files("osteoscreen.web").joinpath("static", name).read_bytes()
        app.add_api_route(route, lambda body=body, media=media: Response(body, media_type=media), methods=["GET"],
                          response_class=HTMLResponse if route == "/" else Response)


def _add_screening(app: FastAPI, services: Services) -> None:
    """POST /api/render, /api/suggest and /api/screen: an uploaded radiograph shown, its landmarks suggested, and
    screened with its 8 landmarks (and the covariates a +clinical model needs)."""
    slots = services.slots

    @app.post("/api/render")
    def render(file: Annotated[UploadFile, File()]) -> Response:
        with slots():
            radiograph = decode_upload(file.file.read())
            return Response(display_png(radiograph.pixels), media_type="image/png")

    @app.post("/api/suggest")
    def suggest(file: Annotated[UploadFile, File()]) -> dict:
        model = services.suggester()
        with slots():
            return suggestion_response(model, decode_upload(file.file.read()), "the upload")

    @app.post("/api/screen")
    def screen(file: Annotated[UploadFile, File()], landmarks: Annotated[str, Form()],
               age: Annotated[str, Form()] = "", sex: Annotated[str, Form()] = "") -> dict:
        model = services.model()
        form = ScreeningForm.parse(model, landmarks, age, sex)
        data = file.file.read()
        with slots():
            screened = form.screen(model, decode_upload(data))
        return {**screening_response(model, screened.result), "dicom": image_kind(data[:132]) == "dicom"}


@dataclass(frozen=True)
class ScreeningForm:
    """The fields of a screening request beside the file, checked before the upload is decoded: the landmarks'
    JSON, and age and sex (years, "F"/"M"; None when empty)."""

    landmarks: object
    age: float | None
    sex: str | None

    @classmethod
    def parse(cls, model: Model, landmarks: str, age: str, sex: str) -> ScreeningForm:
        payload = parse_json(landmarks, "landmarks", max_bytes=MAX_JSON_BYTES).value
        return cls(payload, *parse_covariates(age, sex, needed=bool(model.covariates)))

    def screen(self, model: Model, radiograph: Radiograph) -> Screened:
        """The uploaded radiograph screened at these landmarks (checked against its size here)."""
        from osteoscreen.deploy.prediction_writers import Screened

        height, width = radiograph.pixels.shape
        subject = Subject(UPLOAD_ID, Path(UPLOAD_ID), None, parse_landmarks(self.landmarks, width, height),
                          radiograph.spacing_mm, age=self.age, sex=self.sex)
        return Screened(subject, UPLOAD_ID, radiograph, model.screen_subject(subject, radiograph))


def screening_response(model: Model, result: Screening) -> dict:
    """A screening as the page shows it: p, decision, threshold and rule, novelty, attention per group, the method
    and the 8 patches as PNG data URIs."""
    views = result.patches.plain_views(model.config.patch.context)
    attention = None if result.attention is None else dict(zip(GROUPS, map(float, result.attention), strict=True))
    return {"p_osteoporosis": result.probability, "decision": result.decision,
            "threshold": model.threshold, "decision_rule": model.rule.rule,
            "novelty_distance": result.distance, "unlike_training": result.unlike_training,
            "attention": attention, "method": model.method,
            "patches": [{"landmark": name, "png": _data_uri(view)} for name, view in zip(LANDMARKS, views,
                                                                                      strict=True)],
            "disclaimer": DISCLAIMER}


def _add_dicom_results(app: FastAPI, services: Services) -> None:
    """POST /api/dicom/{part} (sr or key-image): that DICOM file of a DICOM upload's screening, as a download;
    POST /api/send: both sent to the configured PACS, answered {"destination", "sent": [names], "failed": [lines]}.
    The forms are /api/screen's. Nothing is kept: the files are built per request, sent from a temporary folder."""

    def results(file: UploadFile, landmarks: str, age: str, sex: str,
                parts: tuple[str, ...] = DICOM_PARTS) -> dict[str, object]:
        """{file name: dataset} of the asked `parts` only (the key image draws the screening figure)."""
        from osteoscreen.deploy.dicom_results import KEY_IMAGE_SUFFIX, SR_SUFFIX, key_image, structured_report

        builders = {"sr": (SR_SUFFIX, structured_report), "key-image": (KEY_IMAGE_SUFFIX, key_image)}
        model = services.model()
        form = ScreeningForm.parse(model, landmarks, age, sex)
        with services.slots():
            radiograph, reference = decode_dicom_upload(file.file.read())
            screened = form.screen(model, radiograph)
            return {f"{UPLOAD_ID}{builders[part][0]}": builders[part][1](reference, screened, model)
                    for part in parts}

    @app.post("/api/dicom/{part}")
    def dicom_file(part: str, file: Annotated[UploadFile, File()], landmarks: Annotated[str, Form()],
                   age: Annotated[str, Form()] = "", sex: Annotated[str, Form()] = "") -> Response:
        if part not in DICOM_PARTS:
            raise UploadError(404, f"no DICOM result {part!r}: ask for {' or '.join(DICOM_PARTS)}")
        ((name, dataset),) = results(file, landmarks, age, sex, (part,)).items()
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return Response(buffer.getvalue(), media_type="application/dicom",
                        headers={"Content-Disposition": f'attachment; filename="osteoscreen-{name}"'})

    @app.post("/api/send")
    def send(file: Annotated[UploadFile, File()], landmarks: Annotated[str, Form()],
             age: Annotated[str, Form()] = "", sex: Annotated[str, Form()] = "") -> dict:
        from osteoscreen.deploy.dicom_results import DICOM_FOLDER
        from osteoscreen.deploy.pacs import send_results

        destination = services.pacs()
        files = results(file, landmarks, age, sex)
        with tempfile.TemporaryDirectory(prefix="osteoscreen-send-") as folder:
            (Path(folder) / DICOM_FOLDER).mkdir()
            for name, dataset in files.items():
                dataset.save_as(Path(folder) / DICOM_FOLDER / name, enforce_file_format=True)
            report = send_results(folder, destination)
            failed = [line.replace(f"{Path(folder) / DICOM_FOLDER}/", "") for line in report.failed]
        return {"destination": destination.address, "sent": report.sent, "failed": failed}


def _add_annotation(app: FastAPI, services: Services) -> None:
    """The dataset's subjects by index: overview, image, landmarks, a suggestion, and saving landmarks.csv."""
    slots = services.slots

    @app.get("/api/subjects")
    def subjects() -> list[dict]:
        return services.annotations().overview()

    @app.get("/api/subjects/{index}/image")
    def subject_image(index: int) -> Response:
        subject = services.subject(index)
        with slots():
            return Response(display_png(subject.load_image().pixels), media_type="image/png")

    @app.get("/api/subjects/{index}/landmarks")
    def subject_landmarks(index: int) -> dict:
        subject = services.subject(index)
        return {"subject_id": subject.subject_id, "landmarks": AnnotationStore.landmarks(subject)}

    @app.get("/api/subjects/{index}/suggestion")
    def subject_suggestion(index: int) -> dict:
        model, subject = services.suggester(), services.subject(index)
        with slots():
            return {"subject_id": subject.subject_id,
                    **suggestion_response(model, subject.load_image(), subject.subject_id)}

    @app.put("/api/subjects/{index}/landmarks")
    async def save_landmarks(index: int, request: Request) -> dict:
        subject = services.subject(index)
        body = parse_json(await request.body(), "body", max_bytes=MAX_JSON_BYTES)
        if not isinstance(body.value, dict) or "landmarks" not in body.value:
            raise UploadError(422, "body: expected {\"landmarks\": {landmark: [x, y]}}")
        return await run_in_threadpool(save_subject, subject, body.value["landmarks"])

    def save_subject(subject: Subject, landmarks: object) -> dict:
        store = services.annotations()
        with slots():
            height, width = subject.load_image().pixels.shape
        store.save(subject, parse_landmarks(landmarks, width, height))
        return {"saved": subject.subject_id, "file": store.path.name,
                "complete": sum(entry["placed"] == len(LANDMARKS) for entry in store.overview())}
