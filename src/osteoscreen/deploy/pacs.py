"""Sending a run's DICOM results (dicom_results) to a PACS: DIMSE C-STORE (pynetdicom) to `AET@HOST:PORT`, or
DICOMweb STOW-RS (dicomweb-client) to a URL.

Nothing is lost and nothing is sent twice: `dicom/sent.json` in the run's folder records, per destination, each
file a PACS accepted (with the file's SHA-256), written after every acceptance. Sending again sends only the
files that destination has not accepted (or that changed since). A PACS that is down, refuses a SOP class or
does not answer in time gives one line per file that was not accepted; the files stay where they are.

The ledger names files and destinations only (no UIDs, no patient data), like every non-DICOM output.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from osteoscreen.core.errors import InputError
from osteoscreen.deploy.dicom_results import DICOM_FOLDER
from osteoscreen.io.outputs import strict_json, write_text_atomic

LEDGER = "sent.json"
DEFAULT_CALLING_AET = "OSTEOSCREEN"
DEFAULT_TIMEOUT_S = 30.0
_DIMSE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")
#: The SOP classes of a run's results: Comprehensive 3D SR Storage (the report), Secondary Capture (the key image).
STORAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7")
_AET = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")  # 16 chars, no \


@dataclass(frozen=True)
class Destination:
    """Where results go: kind "dimse" (address AET@HOST:PORT; our calling AE title) or "stow" (address: the
    DICOMweb service's URL); timeout_s: for connecting and for each answer."""

    kind: str
    address: str
    calling_aet: str = DEFAULT_CALLING_AET
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def key(self) -> str:
        """The ledger's name for the destination (a URL without its user name and password)."""
        if self.kind == "dimse":
            return f"dimse {self.address}"
        parts = urlsplit(self.address)
        return f"stow {urlunsplit(parts._replace(netloc=parts.hostname + (f':{parts.port}' if parts.port else '')))}"


def dimse_destination(text: str, calling_aet: str = DEFAULT_CALLING_AET,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> Destination:
    """`AET@HOST:PORT` (the PACS's AE title, its host and DICOM port); InputError for anything else."""
    match = _DIMSE.match(text)
    if match is None or not 0 < int(match["port"]) < 65536 or not _AET.match(match["aet"]):
        raise InputError(f"--send: expected AET@HOST:PORT (the PACS's AE title of 1-16 characters, its host and "
                         f"DICOM port), got {text!r}")
    if not _AET.match(calling_aet):
        raise InputError(f"--calling-aet: expected an AE title of 1-16 characters, got {calling_aet!r}")
    return Destination("dimse", text, calling_aet, timeout_s)


def stow_destination(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Destination:
    """A DICOMweb service's base URL (http or https), e.g. http://pacs:8042/dicom-web; InputError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--stow: expected the DICOMweb service's http(s) URL, got {url!r}")
    return Destination("stow", url, timeout_s=timeout_s)


@dataclass
class SendReport:
    """What one send did: files accepted now, files the destination had accepted before, and one line per file
    not accepted."""

    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_ledger(folder: Path) -> dict:
    path = folder / LEDGER
    if not path.exists():
        return {}
    try:
        ledger = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable send ledger ({error}); move it away to send everything "
                         "again") from None
    if not isinstance(ledger, dict) or not all(isinstance(v, dict) for v in ledger.values()):
        raise InputError(f"{path}: not a send ledger (expected {{destination: {{file: sha256}}}})")
    return ledger


def send_results(run_dir: str | Path, destination: Destination, progress: Callable[[Iterable], Iterable] = iter
                 ) -> SendReport:
    """Send RUN/dicom/*.dcm that `destination` has not accepted yet (RUN/dicom/sent.json); returns what happened.
    InputError when RUN has no DICOM results."""
    folder = Path(run_dir) / DICOM_FOLDER
    files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if not files:
        raise InputError(f"{run_dir}: no DICOM results to send (write them with `predict ... --dicom-out`)")
    ledger = _read_ledger(folder)
    accepted = ledger.setdefault(destination.key, {})
    report, pending = SendReport(), []
    for path in files:
        if accepted.get(path.name) == _digest(path):
            report.already.append(path.name)
        else:
            pending.append(path)
    sender = _DimseSender(destination) if destination.kind == "dimse" else _StowSender(destination)
    try:
        for path in progress(pending):
            problem = sender.send(path)
            if problem is None:
                accepted[path.name] = _digest(path)
                write_text_atomic(folder / LEDGER, strict_json(ledger))
                report.sent.append(path.name)
            else:
                report.failed.append(f"{path}: not sent to {destination.address}: {problem}")
    finally:
        sender.close()
    return report


class _DimseSender:
    """C-STORE over one association, opened again after a failure."""

    def __init__(self, destination: Destination):
        from pynetdicom import AE

        match = _DIMSE.match(destination.address)
        self.aet, self.host, self.port = match["aet"], match["host"], int(match["port"])
        self.ae = AE(ae_title=destination.calling_aet)
        for timeout in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(self.ae, timeout, destination.timeout_s)
        self.timeout_s = destination.timeout_s
        self.association = None

    def _associate(self, sop_classes: Iterable[str]) -> str | None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        self.ae.requested_contexts = []
        for sop_class in sop_classes:
            self.ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        association = self.ae.associate(self.host, self.port, ae_title=self.aet)
        if association.is_established:
            self.association = association
            return None
        if association.rejected_contexts and not association.accepted_contexts:
            names = sorted({getattr(c.abstract_syntax, "name", c.abstract_syntax)
                            for c in association.rejected_contexts})
            return f"the PACS refuses {' and '.join(names)} (SOP classes {', '.join(sop_classes)})"
        if association.is_rejected:
            return "the PACS rejected the association (check our calling AE title and its AE title)"
        return f"no answer within {self.timeout_s:g} s, or the connection was refused (is it running?)"

    def send(self, path: Path) -> str | None:
        """None when the PACS accepted the file, else why not (one line)."""
        import pydicom

        dataset = pydicom.dcmread(path)
        sop_class = dataset.SOPClassUID
        if self.association is None or not self.association.is_established:
            problem = self._associate(STORAGE_CLASSES)
            if problem is not None:
                return problem
        accepted = [c for c in self.association.accepted_contexts if c.abstract_syntax == sop_class]
        if not accepted:
            return f"the PACS refuses {getattr(sop_class, 'name', sop_class)} (SOP class {sop_class})"
        try:
            status = self.association.send_c_store(dataset)
        except (RuntimeError, ValueError, OSError) as error:
            self.association = None
            return f"the association failed ({error})"
        if "Status" not in status:
            self.association = None
            return f"no answer within {self.timeout_s:g} s, or the connection was lost"
        code = int(status.Status)
        if code == 0 or 0xB000 <= code <= 0xBFFF:  # success, or a warning (the PACS stored it, maybe coerced)
            return None
        return f"the PACS answered status 0x{code:04X}{_status_text(status)}"

    def close(self) -> None:
        if self.association is not None and self.association.is_established:
            self.association.release()


def _status_text(status) -> str:
    comment = str(status.get("ErrorComment", "")).strip()
    return f" ({comment})" if comment else ""


class _StowSender:
    """STOW-RS, one instance per request (so each file is accepted or not on its own), without retries."""

    def __init__(self, destination: Destination):
        from dicomweb_client.api import DICOMwebClient

        self.client = DICOMwebClient(url=destination.address, timeout=destination.timeout_s)
        self.client.set_http_retry_params(retry=False)
        self.timeout_s = destination.timeout_s

    def send(self, path: Path) -> str | None:
        import pydicom
        import requests

        try:
            answer = self.client.store_instances([pydicom.dcmread(path)])
        except requests.exceptions.Timeout:
            return f"no answer within {self.timeout_s:g} s"
        except requests.exceptions.ConnectionError:
            return "cannot connect (is it running?)"
        except requests.exceptions.HTTPError as error:
            return f"HTTP {error.response.status_code} {error.response.reason}"
        except requests.exceptions.RequestException as error:
            return f"the request failed ({error})"
        failed = answer.get("FailedSOPSequence", []) if answer is not None else []
        if failed:
            reason = failed[0].get("FailureReason")
            return f"the PACS refused it (failure reason {int(reason):#06x})" if reason is not None else \
                "the PACS refused it"
        return None

    def close(self) -> None:
        self.client._session.close()
