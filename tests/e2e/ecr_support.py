"""Helpers for the registry's end-to-end tests: the AWS CLI's `ecr`
commands, a Docker CLI with its own login state, images built here, and a
raw client of the distribution protocol for what no CLI lets a test do
(cut an upload short, send a wrong digest)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import subprocess
import tempfile
from pathlib import Path

from support import AWS_CLI, CLI_TIMEOUT_S, DOCKER_TIMEOUT_S, TEST_IMAGE, FlotillaServer, docker

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def ecr_cli(server: FlotillaServer, *args: str, input: str | None = None):
    """`aws --endpoint-url ... ecr ARGS`: (returncode, JSON or raw stdout, or stderr on failure)."""
    command = [str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "ecr", *args]
    done = subprocess.run(command, env=server.cli_env(), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, input=input)
    if done.returncode != 0:
        return done.returncode, done.stderr
    try:
        return 0, json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        return 0, done.stdout


def registry_host(server: FlotillaServer) -> str:
    return f"localhost:{server.port}"


def login_password(server: FlotillaServer) -> str:
    code, out = ecr_cli(server, "get-login-password")
    assert code == 0, out
    return out.strip()


class DockerClient:
    """The Docker CLI with a login state of its own (DOCKER_CONFIG), so that
    tests never read or write the user's ~/.docker."""

    def __init__(self, config_dir: Path):
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {"DOCKER_CONFIG": str(config_dir)}

    def run(self, *args: str, check: bool = True, input: bytes | None = None):
        return docker(*args, check=check, input=input, env=self.env, timeout=DOCKER_TIMEOUT_S)

    def login(self, server: FlotillaServer):
        # What a user types: aws ecr get-login-password | docker login ...
        password = login_password(server)
        done = self.run("login", "--username", "AWS", "--password-stdin", registry_host(server),
                        input=password.encode())
        assert b"Login Succeeded" in done.stdout, done


def build_image(tag: str, marker: str) -> None:
    """A small image on top of the local test image whose /marker holds
    `marker` and whose command prints it; distinct markers give distinct layers."""
    with tempfile.TemporaryDirectory(prefix="flotilla-ecr-image-") as context:
        context_dir = Path(context)
        (context_dir / "marker").write_text(marker + "\n")
        (context_dir / "Dockerfile").write_text(
            f'FROM {TEST_IMAGE}\nCOPY marker /marker\nCMD ["cat", "/marker"]\n')
        docker("build", "--quiet", "--tag", tag, str(context_dir), env={"DOCKER_BUILDKIT": "0"})


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RawRegistry:
    """The distribution protocol over http.client, with a login token."""

    def __init__(self, server: FlotillaServer, token: str | None = None):
        self.port = server.port
        self.token = login_password(server) if token is None else token

    def auth_headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        basic = base64.b64encode(f"AWS:{self.token}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers={**self.auth_headers(), **(headers or {})})
            response = connection.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            connection.close()

    def error_code(self, body: bytes) -> str:
        return json.loads(body)["errors"][0]["code"]

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        status, _, body = self.request("POST", f"/v2/{repository}/blobs/uploads/?digest={digest}", data,
                                       {"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest

    def push_image(self, repository: str, tag: str, marker: str, media_type: str = OCI_MANIFEST) -> str:
        """Pushes a one-layer image (config and layer made from `marker`); returns its digest."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "marker": marker}).encode()
        layer = f"layer {marker}".encode()
        config_type = DOCKER_CONFIG if media_type == DOCKER_MANIFEST else "application/vnd.oci.image.config.v1+json"
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": self.push_blob(repository, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": self.push_blob(repository, layer),
                        "size": len(layer)}],
        }).encode()
        status, headers, body = self.request("PUT", f"/v2/{repository}/manifests/{tag}", manifest,
                                             {"Content-Type": media_type})
        assert status == 201, (status, body)
        assert headers["docker-content-digest"] == sha256(manifest)
        return sha256(manifest)


def blob_files(server: FlotillaServer) -> set[str]:
    """The digests of every blob file under the server's data directory."""
    root = server.data_dir / "registry" / "blobs" / "sha256"
    return {f"sha256:{path.name}" for path in root.glob("*/*")} if root.exists() else set()

