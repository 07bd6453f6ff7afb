"""`predict EXPORT --runtime onnx`: an exported model (deploy.onnx_export) screening in onnxruntime (CPU).

`OnnxModel` is a Model whose network is the exported graph: it cuts and renders patches as the model does, runs
the graph on `threads` intra-op threads, and hands back p, attention and the novelty distance, so `predict`, its
writers (predictions.csv, figures, prediction.json, the DICOM results) and `screen` work unchanged. It keeps the
model's record, decision rule and novelty threshold from screening.json; it cannot be trained or saved.
Loading checks screening.json's fields, the ONNX file's SHA-256 and the graph's binding to screening.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from osteoscreen.core.errors import InputError
from osteoscreen.data.cohort import Cohort
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.model_info import check_model_info
from osteoscreen.deploy.onnx_export import BINDING_KEY, CONTRACT_FILE, EXPORT_FORMAT, ONNX_FILE, onnx_missing
from osteoscreen.evaluation.operating_point import FittedRule
from osteoscreen.io.bound_files import MAX_INFO_BYTES, canonical_digest, file_sha256
from osteoscreen.io.jsoninput import read_json
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fitted import clinical_covariates


class OnnxModel(Model):
    """An exported model (EXPORT/: model.onnx and screening.json) screening with onnxruntime."""

    def __init__(self, folder: Path, contract: dict, config: TrainConfig):
        self.folder, self.contract, self._config = folder, contract, config
        self.info = contract["model"]
        rule = contract["decision"]
        self.rule = FittedRule(rule["calibration"], rule["threshold"], rule["how_chosen"])
        # the novelty reference lives in the graph; only its threshold is needed here
        self.novelty = None if contract["novelty"] is None else {"threshold": contract["novelty"]["threshold"]}
        self._session = None

    @property
    def config(self) -> TrainConfig:
        return self._config

    @property
    def digest(self) -> str:
        """The exported graph's SHA-256: its results are other DICOM instances than the PyTorch model's."""
        return self.contract["weights_sha256"]

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Read EXPORT/ (written by `osteoscreen export`), checked."""
        folder = Path(path)
        contract_path, onnx_path = folder / CONTRACT_FILE, folder / ONNX_FILE
        for needed in (contract_path, onnx_path):
            if not needed.is_file():
                raise InputError(f"{needed}: not found ({folder} is not an `osteoscreen export` folder)")
        document = read_json(contract_path, max_bytes=64 * MAX_INFO_BYTES)
        if document.object().get("format") != EXPORT_FORMAT:
            raise InputError(f"{contract_path}: export format {document.value.get('format')!r}, this osteoscreen "
                             f"reads format {EXPORT_FORMAT}; export the model again")
        config = check_model_info(document["model"])
        decision = document["decision"]
        decision["threshold"].number(0, 1, open_interval=True)
        decision["how_chosen"].string()
        decision["calibration"].object()
        novelty = document["novelty"]  # present in every export: null without a novelty reference
        if novelty.value is not None:
            novelty["threshold"].number(0)
        contract = document.value
        if file_sha256(onnx_path) != document["weights_sha256"].string():
            raise InputError(f"{onnx_path}: does not match the SHA-256 recorded in {contract_path} (corrupt or "
                             "altered)")
        model = cls(folder, contract, config)
        if model.session().get_modelmeta().custom_metadata_map.get(BINDING_KEY) != canonical_digest(contract):
            raise InputError(f"{contract_path}: edited after the model was exported (its content no longer matches "
                             f"the digest bound into {ONNX_FILE}); refused as tampering: export the model again")
        return model

    def session(self):
        """The onnxruntime session (created on first use, in this process; on `threads` intra-op threads)."""
        if self._session is None:
            try:
                import onnxruntime
            except ImportError:
                raise onnx_missing() from None
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = self.config.threads
            options.log_severity_level = 3
            try:
                self._session = onnxruntime.InferenceSession(str(self.folder / ONNX_FILE), options,
                                                             providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime raises its own error types for a damaged graph
                raise InputError(f"{self.folder / ONNX_FILE}: not a readable ONNX graph "
                                 f"({str(error).splitlines()[0]})") from None
        return self._session

    def __getstate__(self) -> dict:  # a Ray task opens its own session
        return {**self.__dict__, "_session": None}

    def outputs(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """As Model.outputs, from the graph: patches rendered at the model's input size, one subject per run."""
        everyone = np.arange(len(cohort))
        size = self.info["preprocessing"]["input_size"]
        names = [output["name"] for output in self.contract["outputs"]]
        results = []
        for index in everyone:
            feed = {"patches": cohort.render([index], size).numpy()}
            if self.config.clinical:
                feed["covariates"] = clinical_covariates(cohort, [index]).numpy()
            results.append(dict(zip(names, self.session().run(names, feed), strict=True)))
        joined = {name: np.concatenate([r[name] for r in results]).astype(np.float64) for name in names}
        return joined["p_osteoporosis"], joined.get("attention"), joined.get("novelty_distance")

    def save(self, path: str | Path) -> Path:
        raise InputError("an exported model is screened with, not saved: keep its export folder")

    def write(self, folder: Path) -> None:
        self.save(folder)
