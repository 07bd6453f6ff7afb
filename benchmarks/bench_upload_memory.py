"""Peak resident memory of `osteoscreen serve` under hostile concurrent uploads.

A server process (screening mode, `--max-decodes 2`) receives, 16 at a time from client threads:
- "bombs": a 0.2 MB PNG declaring 7745 x 7745 RGBA (240 MB of decoded samples: refused from its header);
- "largest accepted": a PNG declaring 7700 x 7700 grey 16-bit (59 megapixels, 113 MiB of samples: just under
  both limits), which the server decodes and renders.
Its peak RSS (VmHWM of /proc/PID/status) is compared with its RSS when idle. The bound: `--max-decodes` x what
one decode may take (the decoded samples, 4 bytes per pixel of float32 image, the rendered PNG's 1 byte per
pixel), plus slack for the interpreter. Before the decode limits, one bomb took the server from 0.3 to 2.6 GB
and nothing bounded concurrency.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from common import Row

CONCURRENT = 16
MAX_DECODES = 2
SLACK_GIB = 0.5
BIN = Path(sys.executable).parent / "osteoscreen"


def _png(mode: str, side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (side, side)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def _post(url: str, body: bytes) -> int:
    boundary = "osteoscreen-bench"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _rss_kib(pid: int, field: str) -> int:
    return int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith(field)))


def _model(folder: Path) -> Path:
    from osteoscreen.data.cohort import Cohort
    from osteoscreen.data.dataset import load_dataset
    from osteoscreen.data.phantom.synthesis import PhantomConfig, synthesise
    from osteoscreen.deploy.model import Model
    from osteoscreen.training.config import TrainConfig
    from osteoscreen.training.fit import fit

    data = synthesise(folder / "data", PhantomConfig(n=4, positives=2, seed=3))
    dataset = load_dataset(data)
    config = TrainConfig(views=1, epochs=1)
    cohort = Cohort.from_dataset(dataset, config.patch)
    return Model(fit(cohort, np.arange(4), config), training_data=dataset.summary()).save(folder / "model")


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="osteoscreen-bench-") as folder:
        model = _model(Path(folder))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([str(BIN), "serve", "--model", str(model), "--port", str(port), "--max-decodes",
                                   str(MAX_DECODES)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}/api/render"
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.2)
            idle = _rss_kib(server.pid, "VmRSS")
            rows = []
            for name, body in (("bombs (7745x7745 RGBA PNG)", _png("RGBA", 7745)),
                               ("largest accepted (7700x7700 16-bit PNG)", _png("I;16", 7700))):
                statuses: list[int] = []
                threads = [threading.Thread(target=lambda out=statuses, data=body: out.append(_post(url, data)))
                           for _ in range(CONCURRENT)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                peak = _rss_kib(server.pid, "VmHWM")
                counts = ", ".join(f"{statuses.count(s)} x {s}" for s in sorted(set(statuses)))
                pixels = 7700 * 7700
                per_decode = pixels * (2 + 4 + 1) / 2**30
                bound = idle / 2**20 + MAX_DECODES * per_decode + SLACK_GIB
                rows.append(Row(f"server peak RSS, {CONCURRENT} concurrent {name} (GiB)",
                                f"{peak / 2**20:.2f} (idle {idle / 2**20:.2f}; {counts})", "", "",
                                f"<= {bound:.2f} GiB", peak / 2**20 <= bound))
        finally:
            server.terminate()
            log = server.communicate(timeout=30)[1].decode()
        if "Traceback" in log:
            raise RuntimeError(f"the server printed a traceback: {log[:2000]}")
        return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
