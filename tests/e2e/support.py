"""A real `flotilla server` process and the clients our users drive it
with: boto3, the AWS CLI, and botocore's own signers for requests below the
SDKs. The fixtures in conftest.py hand these out."""

from __future__ import annotations

import datetime
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOTILLA_BIN = Path(os.environ.get("FLOTILLA_BIN") or REPO_ROOT / "target/debug/flotilla")
# The CLI installed next to the interpreter running the tests: the pinned one.
AWS_CLI = Path(sys.executable).parent / "aws"

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"
ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113"
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0
STDERR_TAIL_LINES = 200

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# No user configuration may leak into what boto3 does in this process
# (profiles, endpoints, proxies); each CLI run gets its own clean env too.
for _name in list(os.environ):
    if _name.startswith("AWS_"):
        del os.environ[_name]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def utc_now() -> datetime.datetime:
    """Naive UTC `now`, the shape botocore's signer expects."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def client_config(**overrides) -> Config:
    # total_max_attempts=1 is "no retries": botocore's `max_attempts` counts
    # retries after the first attempt, so max_attempts=1 would still retry once.
    settings = dict(
        retries={"total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=HTTP_TIMEOUT_S,
    )
    settings.update(overrides)
    return Config(**settings)


@dataclass
class RawResponse:
    """What came back over the wire, for tests below the SDKs."""

    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def error_code(self) -> str | None:
        body = self.json
        return body.get("__type") if isinstance(body, dict) else None

    @property
    def message(self) -> str:
        body = self.json
        return (body.get("message") or body.get("Message") or "") if isinstance(body, dict) else ""


class _BodyKeepingQueryAuth(botocore.auth.SigV4QueryAuth):
    """SigV4QueryAuth moves a request body into the query string, as query
    services want; an AWS JSON request keeps its body, whose SHA-256 the
    presigned signature then covers."""

    def _modify_request_before_signing(self, request):
        data = request.data
        request.data = b""
        super()._modify_request_before_signing(request)
        request.data = data


@dataclass
class FlotillaServer:
    base_dir: Path
    region: str = REGION
    account_id: str = ACCOUNT_ID
    process: subprocess.Popen | None = None
    endpoint: str = ""
    port: int = 0
    starts: int = 0
    _clients: dict = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def home(self) -> Path:
        return self.base_dir / "home"

    @property
    def stderr_path(self) -> Path:
        return self.base_dir / "server.stderr.log"

    # ---- process lifecycle -------------------------------------------------

    def start(self) -> "FlotillaServer":
        assert self.process is None or self.process.poll() is not None, "already running"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        self.starts += 1
        stdout_path = self.base_dir / f"server.stdout.{self.starts}.log"
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info,flotilla_edge=debug,flotilla_control=debug")
        env["RUST_BACKTRACE"] = "1"
        env["NO_COLOR"] = "1"
        env["HOME"] = str(self.home)
        with open(stdout_path, "wb") as stdout, open(self.stderr_path, "ab") as stderr:
            stderr.write(f"\n===== start #{self.starts} =====\n".encode())
            stderr.flush()
            # Port 0: the kernel picks a free port and the server prints it,
            # so two servers never race for one.
            self.process = subprocess.Popen(
                [
                    str(FLOTILLA_BIN), "server",
                    "--listen", "127.0.0.1:0",
                    "--data-dir", str(self.data_dir),
                    "--region", self.region,
                    "--account-id", self.account_id,
                ],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"flotilla server exited with {self.process.returncode} while starting:\n{self.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"flotilla server did not start in {SERVER_START_TIMEOUT_S}s:\n{self.stderr_tail()}")
            match = re.search(rb"serving the ECS API at (http://[0-9.]+:(\d+))", stdout_path.read_bytes())
            if match and self._healthy(match.group(1).decode()):
                self.endpoint = match.group(1).decode()
                self.port = int(match.group(2))
                self._clients.clear()
                return self
            time.sleep(0.05)

    @staticmethod
    def _healthy(endpoint: str) -> bool:
        url = urllib.parse.urlsplit(endpoint)
        try:
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=2)
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)

    def terminate(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"flotilla server ignored SIGTERM for {SERVER_STOP_TIMEOUT_S}s")
        return self.process.returncode

    def restart(self, *, hard: bool = False) -> "FlotillaServer":
        """Stops the process (SIGKILL when `hard`) and starts a new one on the
        same data directory. The port may change; clients are rebuilt."""
        if hard:
            self.kill9()
        else:
            self.terminate()
        return self.start()

    def stop(self) -> None:
        if self.running:
            try:
                self.terminate()
            except AssertionError:
                pass

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no stderr yet)"
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    # ---- clients ---------------------------------------------------------------

    def client(self, service: str = "ecs", *, access_key: str = ACCESS_KEY_ID,
               secret_key: str = SECRET_ACCESS_KEY, region: str | None = None,
               shared: bool = True, **config):
        """A boto3 client of this server's current endpoint, without retries.
        `shared=False` makes a new one (its own connection pool)."""
        key = (service, access_key, secret_key, region, tuple(sorted(config.items())))
        if shared and key in self._clients:
            return self._clients[key]
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region or self.region,
        )
        made = session.client(service, endpoint_url=self.endpoint, config=client_config(**config))
        if shared:
            self._clients[key] = made
        return made

    @property
    def ecs(self):
        return self.client("ecs")

    def cli_env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": str(self.home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "no-aws-credentials"),
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_RETRY_MODE": "standard",
            "AWS_PAGER": "",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "LANG": "C.UTF-8",
        }
        return env

    def cli(self, *args: str, cwd: Path | None = None):
        """Runs `aws --endpoint-url ... --output json ecs ARGS...`.

        Returns (returncode, parsed JSON output) on success ({} when the
        command prints nothing) and (returncode, stderr text) on failure."""
        command = [str(AWS_CLI), "--endpoint-url", self.endpoint, "--output", "json", "ecs", *args]
        done = subprocess.run(
            command, env=self.cli_env(), capture_output=True, text=True,
            timeout=CLI_TIMEOUT_S, cwd=cwd or self.home,
        )
        if done.returncode != 0:
            return done.returncode, done.stderr
        return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {})

    # ---- below the SDKs ----------------------------------------------------------

    def signed_request(self, operation: str, body: bytes | str | dict | None = None, *,
                       access_key: str = ACCESS_KEY_ID, secret_key: str = SECRET_ACCESS_KEY,
                       signed_at: datetime.datetime | None = None, target: str | None = None,
                       extra_headers: dict[str, str] | None = None,
                       send_body: bytes | str | dict | None = None) -> RawResponse:
        """POSTs `body` for `operation`, signed in the Authorization header by
        botocore's own SigV4 signer (as of `signed_at`, if given). With
        `send_body`, that is sent instead of the body that was signed."""
        body = _body_bytes(body)
        request = self.build_request(operation, body, target, extra_headers)
        signer = botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(access_key, secret_key), "ecs", self.region
        )
        with _signing_clock(signed_at):
            signer.add_auth(request)
        sent = body if send_body is None else _body_bytes(send_body)
        return self.send("POST", "/", sent, dict(request.headers.items()))

    def presigned_request(self, operation: str, body: bytes | str | dict | None = None, *,
                          signed_at: datetime.datetime | None = None, expires_s: int = 300,
                          send_body: bytes | str | dict | None = None) -> RawResponse:
        """POSTs `body` for `operation`, signed in the query string by
        botocore's SigV4QueryAuth. With `send_body`, that is sent instead of
        the body that was signed."""
        body = _body_bytes(body)
        request = self.build_request(operation, body, None, None)
        signer = _BodyKeepingQueryAuth(
            botocore.credentials.Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "ecs", self.region,
            expires=expires_s,
        )
        with _signing_clock(signed_at):
            signer.add_auth(request)
        url = urllib.parse.urlsplit(request.url)
        assert "X-Amz-Signature=" in url.query
        sent = body if send_body is None else _body_bytes(send_body)
        return self.send("POST", f"{url.path or '/'}?{url.query}", sent, dict(request.headers.items()))

    def build_request(self, operation: str, body: bytes, target: str | None = None,
                      extra_headers: dict[str, str] | None = None) -> botocore.awsrequest.AWSRequest:
        """An unsigned AWS JSON 1.1 request, for a signer to sign."""
        headers = {
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Amz-Target": target if target is not None else f"{ECS_TARGET_PREFIX}.{operation}",
        }
        headers.update(extra_headers or {})
        return botocore.awsrequest.AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers=headers)

    def send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> RawResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return RawResponse(
                status=response.status,
                headers={name.lower(): value for name, value in response.getheaders()},
                body=response.read(),
            )
        finally:
            connection.close()

    def send_headers_only(self, head: str, read_timeout_s: float = 10.0) -> RawResponse:
        """Sends a request head and no body, then reads whatever answer comes.
        For requests the server must refuse on their headers alone (a declared
        body over the limit): it must answer without waiting for the body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout_s) as sock:
            sock.sendall(head.encode())
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                data = b"".join(chunks)
                head_end = data.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", data[:head_end])
                    if length and len(data) >= head_end + 4 + int(length.group(1)):
                        break
        data = b"".join(chunks)
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        if not lines or not lines[0].startswith("HTTP/"):
            raise AssertionError(f"no HTTP response, got {data[:200]!r}")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return RawResponse(status=status, headers=headers, body=body)

    def metrics_text(self) -> str:
        response = self.send("GET", "/metrics")
        assert response.status == 200, response
        return response.body.decode()


def _body_bytes(body) -> bytes:
    if body is None:
        return b"{}"
    if isinstance(body, dict):
        return json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode()
    return body


class _signing_clock:
    """Makes botocore's signer believe it is `at` (naive UTC)."""

    def __init__(self, at: datetime.datetime | None):
        self._patch = mock.patch.object(botocore.auth, "get_current_datetime", return_value=at) if at else None

    def __enter__(self):
        if self._patch:
            self._patch.start()

    def __exit__(self, *exc):
        if self._patch:
            self._patch.stop()


def strip_line_comments(text: str) -> str:
    """Removes `// ...` comments that lie outside JSON strings."""
    out_lines = []
    for line in text.splitlines():
        in_string = escaped = False
        cut = len(line)
        for index, char in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif line.startswith("//", index):
                cut = index
                break
        out_lines.append(line[:cut].rstrip())
    return "\n".join(out_lines) + "\n"


def error_of(excinfo) -> tuple[str, str]:
    """(code, message) of a botocore ClientError caught by pytest.raises."""
    error = excinfo.value.response["Error"]
    return error.get("Code", ""), error.get("Message", "")


def cluster_arn(name: str) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/{name}"


def task_definition_arn(family: str, revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task-definition/{family}:{revision}"


def all_pages(client, operation: str, result_key: str, **params) -> list:
    """Every item of a listing, walked page by page with nextToken."""
    items, token = [], None
    for _ in range(10_000):
        kwargs = dict(params)
        if token:
            kwargs["nextToken"] = token
        page = getattr(client, operation)(**kwargs)
        items.extend(page.get(result_key, []))
        token = page.get("nextToken")
        if not token:
            return items
    raise AssertionError(f"{operation} never stopped paginating")


_NAMES = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this run uses."""
    return f"{prefix}-{next(_NAMES)}"
