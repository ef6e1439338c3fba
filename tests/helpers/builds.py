"""A locked, built and trained project of the engine tests, the training run, and the bundle server that plays
the model store for model_source=downloaded."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from helpers.answers import MATRIX
from helpers.combos import TORCH_FRAMEWORKS, Combo
from helpers.engine import run, timed

# the labels that change with each build: given as the build's --label (as make does), not written in the Dockerfile
LABELS = {"org.opencontainers.image.version": "1.2.3", "org.opencontainers.image.revision": "0123456789abcdef",
          "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
          "org.opencontainers.image.source": "https://example.org/iris.git"}


@dataclass
class Built:
    combo: Combo
    project: Path
    train_image: str
    serve_image: str
    metadata: dict

    def build(self, target: str, *extra: str, record: bool = True) -> str:
        """Build `target` (train or serve) into this chain's image of that name."""
        args = [a for k, v in LABELS.items() for a in ("--label", f"{k}={v}")]
        if self.combo.framework in TORCH_FRAMEWORKS:  # the wheel index of the tests is on this machine's loopback
            args += ["--network", "host"]
        tag = self.train_image if target == "train" else self.serve_image
        command = ["docker", "build", "--progress=plain", "--target", target, "-t", tag, *args, *extra, "."]
        if not record:
            return run(command, cwd=self.project, env={"DOCKER_BUILDKIT": "1"}, check=False).stderr
        result = timed(f"{self.combo.id} {target}" + (" (again)" if extra else ""), command, cwd=self.project,
                       env={"DOCKER_BUILDKIT": "1"})
        return result.stderr + result.stdout

    def touch(self) -> None:
        """Build train and serve again, from the cache: marks the chain's build cache as just used, so a trim of the
        cache takes other chains' first (helpers/footprint.py)."""
        for target in ("train", "serve"):
            self.build(target, record=False)

    def state_args(self, log_volume: str | None = None) -> list[str]:
        """What a read-only run needs to be writable: the prediction log folder (log_predictions; compose and
        Kubernetes mount a volume there), on a tmpfs owned by the image's user, or on `log_volume`."""
        if not self.combo.log_predictions:
            return []
        if log_volume:
            return ["-v", f"{log_volume}:/app/var/log"]
        uid = MATRIX["base_image"][self.combo.base_image]["uid"]
        return ["--tmpfs", f"/app/var/log:uid={uid},gid={uid}"]

    def tampered_models(self, folder: Path) -> Path:
        """A copy of the trained model folder in `folder`, its artifact cut short (its sha256 no longer matches)."""
        folder.mkdir()
        for item in (self.project / "models").iterdir():
            folder.joinpath(item.name).write_bytes(item.read_bytes())
        artifact = folder / self.metadata["artifact"]
        artifact.write_bytes(artifact.read_bytes()[:-10])
        return folder


def train_into(image: str, models: Path, *extra: str) -> dict:
    """Run the train image as its own non-root user, writing into a host folder."""
    models.mkdir(parents=True, exist_ok=True)
    models.chmod(0o777)  # the container's user (uid 10001 or 65532) writes here
    run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", *extra,
         "-v", f"{models}:/app/models", image])
    return json.loads((models / "metadata.json").read_text())


class BundleServer:
    """Model bundles (make publish) served over HTTP on 127.0.0.1, for the `downloaded` model source."""

    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, built: Built) -> tuple[str, str]:
        """`make publish` in the project; returns (MODEL_URI, MODEL_SHA256) of the bundle."""
        out = run(["make", "publish"], cwd=built.project).stdout
        sha = out.split("MODEL_SHA256=")[1].split()[0]
        name = f"{built.combo.id}.tar.gz"
        shutil.copyfile(built.project / "dist" / "model.tar.gz", self.root / name)
        return f"{self.url}/{name}", sha

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
