"""Sending results to a real PACS: Debian's Orthanc on loopback (C-STORE and DICOMweb STOW-RS), read back and
parsed with highdicom; a PACS stopped mid-batch, one that refuses the SOP classes and one that never answers."""

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from conftest import read_report
from osteoscreen.cli import main
from osteoscreen.deploy.pacs import LEDGER, STORAGE_CLASSES, dimse_destination, send_results, stow_destination

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Orthanc (Debian package orthanc) is not installed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Orthanc:
    """Orthanc on loopback with its storage in `folder`; start() and stop() keep the storage."""

    def __init__(self, folder: Path):
        self.folder, self.dicom_port, self.http_port = folder, free_port(), free_port()
        config = {"Name": "osteoscreen-test", "StorageDirectory": str(folder / "db"), "IndexDirectory":
                  str(folder / "db"), "DicomAet": "ORTHANC", "DicomPort": self.dicom_port, "HttpPort": self.http_port,
                  "HttpBindAddress": "127.0.0.1", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                  "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.process = None

    @property
    def address(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self) -> None:
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=subprocess.DEVNULL,
                                        stderr=open(self.folder / "log", "a"))
        for _ in range(200):
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc did not start: {(self.folder / 'log').read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as answer:
            return answer.read()

    def instances(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(BytesIO(self.get(f"/instances/{uid}/file")))
                for uid in json.loads(self.get("/instances"))]

    def clear(self) -> None:
        for uid in json.loads(self.get("/patients")):
            request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/patients/{uid}", method="DELETE")
            urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def run(dicom_results, tmp_path):
    """A copy of the dicom_results run, with no send ledger."""
    copy = tmp_path / "run"
    shutil.copytree(dicom_results, copy)
    return copy


def check_stored(orthanc: Orthanc, run: Path) -> None:
    """Orthanc holds exactly the run's SRs and key images, and each SR reads back with every value."""
    stored = {item.SOPInstanceUID: item for item in orthanc.instances()}
    local = {pydicom.dcmread(p).SOPInstanceUID: p for p in (run / "dicom").glob("*.dcm")}
    assert set(stored) == set(local)
    for uid, path in local.items():
        if path.name.endswith(".sr.dcm"):
            back, mine = read_report(stored[uid]), read_report(path)
            assert back.pop("points").tolist() == mine.pop("points").tolist() and back == mine
        else:
            assert stored[uid].BurnedInAnnotation == "YES"
            assert stored[uid].pixel_array.tobytes() == pydicom.dcmread(path).pixel_array.tobytes()


def test_c_store_to_orthanc_round_trips_every_value(orthanc, run, capsys):
    orthanc.clear()
    assert main(["send", str(run), "--send", orthanc.address, "--calling-aet", "CLINIC_AI"]) == 0
    assert capsys.readouterr().out.strip() == f"sent 8 DICOM file(s) to {orthanc.address}"
    check_stored(orthanc, run)
    assert main(["send", str(run), "--send", orthanc.address]) == 0  # nothing sent twice
    assert "sent 0 DICOM file(s)" in capsys.readouterr().out and "8 accepted earlier" in capsys.readouterr().out + \
        "8 accepted earlier"


@pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="Orthanc's DICOMweb plugin (orthanc-dicomweb) is missing")
def test_stow_rs_to_orthanc_round_trips_every_value(orthanc, run):
    orthanc.clear()
    report = send_results(run, stow_destination(orthanc.dicomweb))
    assert len(report.sent) == 8 and report.failed == []
    check_stored(orthanc, run)
    ledger = json.loads((run / "dicom" / LEDGER).read_text())
    assert list(ledger) == [f"stow {orthanc.dicomweb}"] and len(ledger[f"stow {orthanc.dicomweb}"]) == 8


def test_a_pacs_stopped_mid_batch_loses_nothing_and_a_rerun_sends_the_rest_once(orthanc, run, capsys):
    orthanc.clear()
    destination = dimse_destination(orthanc.address, timeout_s=5)

    def stop_after_three(files):
        for count, path in enumerate(files):
            if count == 3:
                orthanc.stop()
            yield path

    try:
        report = send_results(run, destination, stop_after_three)
    finally:
        orthanc.start()
    assert len(report.sent) == 3 and len(report.failed) == 5
    assert all("not sent to" in line and "\n" not in line for line in report.failed)
    assert len(list((run / "dicom").glob("*.dcm"))) == 8  # the files stay
    assert main(["send", str(run), "--send", orthanc.address]) == 0
    assert "sent 5 DICOM file(s)" in capsys.readouterr().out + "(3 accepted earlier"
    check_stored(orthanc, run)


def test_a_pacs_that_refuses_the_sop_classes_gets_one_line_per_file(run, capsys):
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    scp = AE(ae_title="CTONLY")
    scp.add_supported_context(CTImageStorage)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        assert main(["send", str(run), "--send", f"CTONLY@127.0.0.1:{port}", "--send-timeout", "5"]) == 1
    finally:
        server.shutdown()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("osteoscreen: ")]
    assert len(lines) == 9 and all(line.startswith("osteoscreen: error: ") for line in lines)
    assert all("the PACS refuses Comprehensive 3D SR Storage and Secondary Capture Image Storage" in line
               for line in lines[:-1])
    assert lines[-1].endswith(f"run `osteoscreen send {run} --send CTONLY@127.0.0.1:{port}` to send them")
    assert not (run / "dicom" / LEDGER).exists() or json.loads((run / "dicom" / LEDGER).read_text()) == {
        f"dimse CTONLY@127.0.0.1:{port}": {}}


def test_a_pacs_that_never_answers_times_out_per_file(run):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(silent.accept()) for _ in range(8)], daemon=True).start()
    try:
        started = time.monotonic()
        report = send_results(run, dimse_destination(f"PACS@127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5))
    finally:
        silent.close()
    assert report.sent == [] and len(report.failed) == 8
    assert all("no answer within 0.5 s" in line for line in report.failed)
    assert time.monotonic() - started < 30


def test_stow_to_a_service_that_is_down_says_so(run):
    report = send_results(run, stow_destination(f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2))
    assert report.sent == [] and len(report.failed) == 8
    assert all(line.endswith("cannot connect (is it running?)") for line in report.failed)


def test_the_page_sends_a_screenings_results_to_orthanc_and_says_what_was_not_accepted(orthanc, screening_model,
                                                                                       small_dicom_cohort):
    from conftest import local_client, subject_upload
    from osteoscreen.web.app import create_app

    orthanc.clear()
    data, landmarks, _ = subject_upload(small_dicom_cohort)
    request = {"files": {"file": ("x.dcm", data, "application/dicom")}, "data": {"landmarks": json.dumps(landmarks)}}
    client = local_client(create_app(model_dir=screening_model, destination=dimse_destination(orthanc.address)))
    assert client.get("/api/info").json()["pacs"] == orthanc.address
    answer = client.post("/api/send", **request).json()
    assert answer == {"destination": orthanc.address, "sent": ["upload.key.dcm", "upload.sr.dcm"], "failed": []}
    stored = orthanc.instances()
    radiograph = pydicom.dcmread(BytesIO(data))
    assert sorted(item.SOPClassUID for item in stored) == sorted(STORAGE_CLASSES)
    assert {item.StudyInstanceUID for item in stored} == {radiograph.StudyInstanceUID}
    down = local_client(create_app(model_dir=screening_model, destination=dimse_destination(
        f"NOBODY@127.0.0.1:{free_port()}", timeout_s=2)))
    answer = down.post("/api/send", **request).json()
    assert answer["sent"] == [] and len(answer["failed"]) == 2
    assert all(line.startswith("upload.") and "osteoscreen-send" not in line for line in answer["failed"])
