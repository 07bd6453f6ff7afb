"""The FastAPI application behind `osteoscreen serve`: one page and a JSON API.

Screening (a model): POST /api/render turns an uploaded radiograph into a PNG the page can show; POST
/api/screen takes the radiograph again with its 8 landmarks and returns p(osteoporosis), the decision, the
attention per group and the 8 patches. The server keeps nothing between requests: the page holds the file.
Annotation (a dataset directory): GET /api/subjects, GET /api/subjects/{index}/image and /landmarks, and
PUT /api/subjects/{index}/landmarks, which saves landmarks.csv at once. Subjects are addressed by their index in
subjects.csv, so no path from a request reaches the filesystem; the page's three files are fixed routes.
Suggestion (a landmark model, in either mode): POST /api/suggest (an uploaded radiograph) and GET
/api/subjects/{index}/suggestion give the 8 suggested points with their confidences, flags and warnings; the
page shows them for the user to check and correct, and nothing is saved or screened until the user says so.
"""

from __future__ import annotations

import base64
import warnings
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
from osteoscreen.io.jsoninput import parse_json
from osteoscreen.web.annotations import AnnotationStore, parse_landmarks
from osteoscreen.web.guards import BodySizeLimit, InternalErrors, LocalOrigin
from osteoscreen.web.uploads import DecodeSlots, UploadError, decode_upload, parse_covariates, png_bytes

if TYPE_CHECKING:
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
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode()


def create_app(model_dir: str | Path | None = None, data_dir: str | Path | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2 ** 20, hosts: tuple[str, ...] = LOCAL_HOSTS,
               max_decodes: int = DEFAULT_MAX_DECODES, landmark_model_dir: str | Path | None = None) -> FastAPI:
    """The application for a model directory (screening), a dataset directory (annotation), or both; with a
    landmark model directory (osteoscreen landmarks train) the page can suggest the 8 points in either mode.

    hosts: the host names requests may be addressed to (guards.LocalOrigin); max_decodes: radiographs processed
    at once (more get 503)."""
    from osteoscreen.deploy.model import Model
    from osteoscreen.landmarking.model import LandmarkModel

    if model_dir is None and data_dir is None:
        raise InputError("needs model_dir= (a screening model: screening), data_dir= (a dataset: annotation) or both")
    screening_model = Model.load(model_dir) if model_dir is not None else None
    landmark_model = LandmarkModel.load(landmark_model_dir) if landmark_model_dir is not None else None
    store = AnnotationStore(data_dir) if data_dir is not None else None  # last: it locks the folder
    page = {route: (files("osteoscreen.web").joinpath("static", name).read_bytes(), media)
            for route, (name, media) in PAGE_FILES.items()}

    slots = DecodeSlots(max_decodes)
    app = FastAPI(title="osteoscreen", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes)  # innermost: sees the body first
    app.add_middleware(InternalErrors)
    app.add_middleware(LocalOrigin, hosts=hosts)  # outermost: refuses before anything is read

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

    for route, (body, media) in page.items():
        app.add_api_route(route, lambda body=body, media=media: Response(body, media_type=media), methods=["GET"],
                          response_class=HTMLResponse if route == "/" else Response)

    def need_model():
        if screening_model is None:
            raise UploadError(404, "screening is off: start the server with --model MODEL")
        return screening_model

    def need_store() -> AnnotationStore:
        if store is None:
            raise UploadError(404, "annotation is off: start the server with --data DATA")
        return store

    def need_landmark_model() -> LandmarkModel:
        if landmark_model is None:
            raise UploadError(404, "suggestion is off: start the server with --landmarks-model LMODEL")
        return landmark_model

    def need_subject(index: int) -> Subject:
        subject = need_store().subject(index)
        if subject is None:
            raise UploadError(404, f"no subject with index {index}")
        return subject

    @app.get("/api/info")
    def info() -> dict:
        model = None
        if screening_model is not None:
            record = screening_model.info
            model = {"method": record["method"], "mode": record["mode"], "created": record["created"],
                     "threshold": record["threshold"], "decision_rule": record["decision_rule"]["rule"],
                     "covariates": record["covariates"],
                     "synthetic_training_data": bool(record["training_data"].get("synthetic"))}
        suggester = None
        if landmark_model is not None:
            suggester = {"created": landmark_model.info["created"],
                         "training_radiographs": landmark_model.info["training_data"]["n"],
                         "synthetic_training_data": bool(landmark_model.info["training_data"].get("synthetic"))}
        return {"screening": screening_model is not None, "annotation": store is not None, "model": model,
                "suggest": landmark_model is not None, "landmark_model": suggester,
                "landmarks": _landmark_info(), "groups": list(GROUPS), "max_upload_bytes": max_upload_bytes,
                "disclaimer": DISCLAIMER}

    @app.post("/api/render")
    def render(file: Annotated[UploadFile, File()]) -> Response:
        with slots():
            radiograph = decode_upload(file.file.read())
            return Response(png_bytes(radiograph.pixels), media_type="image/png")

    @app.post("/api/suggest")
    def suggest(file: Annotated[UploadFile, File()]) -> dict:
        model = need_landmark_model()
        with slots():
            return suggestion_response(model, decode_upload(file.file.read()), "the upload")

    @app.post("/api/screen")
    def screen(file: Annotated[UploadFile, File()], landmarks: Annotated[str, Form()],
               age: Annotated[str, Form()] = "", sex: Annotated[str, Form()] = "") -> dict:
        model = need_model()
        payload = parse_json(landmarks, "landmarks", max_bytes=MAX_JSON_BYTES).value
        patient_age, patient_sex = parse_covariates(age, sex, needed=bool(model.covariates))
        with slots():
            radiograph = decode_upload(file.file.read())
            height, width = radiograph.pixels.shape
            points = parse_landmarks(payload, width, height)
            result = model.screen(radiograph, points, patient_age, patient_sex, subject_id="upload")
        views = result.patches.plain_views(model.config.patch.context)
        attention = None if result.attention is None else dict(zip(GROUPS, map(float, result.attention),
                                                                   strict=True))
        return {"p_osteoporosis": result.probability, "decision": result.decision,
                "threshold": model.threshold, "decision_rule": model.rule.rule,
                "novelty_distance": result.distance, "unlike_training": result.unlike_training,
                "attention": attention, "method": model.method,
                "patches": [{"landmark": name, "png": _data_uri(view)} for name, view in zip(LANDMARKS, views,
                                                                                          strict=True)],
                "disclaimer": DISCLAIMER}

    @app.get("/api/subjects")
    def subjects() -> list[dict]:
        return need_store().overview()

    @app.get("/api/subjects/{index}/image")
    def subject_image(index: int) -> Response:
        subject = need_subject(index)
        with slots():
            return Response(png_bytes(subject.load_image().pixels), media_type="image/png")

    @app.get("/api/subjects/{index}/landmarks")
    def subject_landmarks(index: int) -> dict:
        subject = need_subject(index)
        return {"subject_id": subject.subject_id, "landmarks": AnnotationStore.landmarks(subject)}

    @app.get("/api/subjects/{index}/suggestion")
    def subject_suggestion(index: int) -> dict:
        model, subject = need_landmark_model(), need_subject(index)
        with slots():
            return {"subject_id": subject.subject_id,
                    **suggestion_response(model, subject.load_image(), subject.subject_id)}

    @app.put("/api/subjects/{index}/landmarks")
    async def save_landmarks(index: int, request: Request) -> dict:
        subject = need_subject(index)
        body = parse_json(await request.body(), "body", max_bytes=MAX_JSON_BYTES)
        if not isinstance(body.value, dict) or "landmarks" not in body.value:
            raise UploadError(422, "body: expected {\"landmarks\": {landmark: [x, y]}}")
        return await run_in_threadpool(save_subject, subject, body.value["landmarks"])

    def save_subject(subject: Subject, landmarks: object) -> dict:
        with slots():
            height, width = subject.load_image().pixels.shape
        store.save(subject, parse_landmarks(landmarks, width, height))
        return {"saved": subject.subject_id, "file": store.path.name,
                "complete": sum(entry["placed"] == len(LANDMARKS) for entry in store.overview())}

    return app
