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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import boto3
import pytest
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
    # `server`, or `up` for the control plane plus the local agent.
    command: str = "server"
    extra_args: tuple = ()
    # False: start without --region, so the server finds its region in its
    # environment (`extra_env`) as a user's would; set `region` to what it
    # should find, for the clients.
    pass_region: bool = True
    extra_env: dict = field(default_factory=dict)
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
    def local_instance_ids(self) -> list[str]:
        """`up` only: the instance ids of the local agent and the local
        Fargate host, once they have them."""
        found = []
        for agent in ("agent", "fargate-agent"):
            path = self.data_dir / agent / "identity.json"
            try:
                found.append(json.loads(path.read_text())["instanceId"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                continue
        return found

    @property
    def stderr_path(self) -> Path:
        return self.base_dir / "server.stderr.log"

    # ---- process lifecycle -------------------------------------------------

    def start(self, *, port: int = 0) -> "FlotillaServer":
        """Starts the process on `port` (0: one the kernel picks)."""
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
        env.update(self.extra_env)
        region_args = ("--region", self.region) if self.pass_region else ()
        with open(stdout_path, "wb") as stdout, open(self.stderr_path, "ab") as stderr:
            stderr.write(f"\n===== start #{self.starts} =====\n".encode())
            stderr.flush()
            # Port 0: the kernel picks a free port and the server prints it,
            # so two servers never race for one.
            self.process = subprocess.Popen(
                [
                    str(FLOTILLA_BIN), self.command,
                    "--listen", f"127.0.0.1:{port}",
                    "--data-dir", str(self.data_dir),
                    *region_args,
                    "--account-id", self.account_id,
                    *self.extra_args,
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
                    f"flotilla {self.command} exited with {self.process.returncode} while starting:\n{self.stderr_tail()}"
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

    def stdout_text(self) -> str:
        """What the current process printed on stdout so far."""
        return (self.base_dir / f"server.stdout.{self.starts}.log").read_text(errors="replace")

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

    def restart(self, *, hard: bool = False, keep_port: bool = False) -> "FlotillaServer":
        """Stops the process (SIGKILL when `hard`) and starts a new one on the
        same data directory. The port may change unless `keep_port` (as
        agents, which know one endpoint, need); clients are rebuilt."""
        port = self.port if keep_port else 0
        if hard:
            self.kill9()
        else:
            self.terminate()
        return self.start(port=port)

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


# ---- agents, Docker and tasks ---------------------------------------------------
#
# The heavy part of the suite: `flotilla agent` processes (real Docker or
# `--simulate N`) registered to a `FlotillaServer`, the local test image, and
# the waits a user would do with `aws ecs wait`. Every container a test makes
# carries the label com.flotilla.cluster and com.flotilla.instance-id; the
# fixtures remove them by instance id (and volumes by cluster), so a run never
# touches another run's containers on the same engine.

AGENT_REGISTER_TIMEOUT_S = 30.0
AGENT_STOP_TIMEOUT_S = 15.0
DOCKER_TIMEOUT_S = 120.0
TASK_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2

# Built here from Debian's static busybox, as crates/runtime/src/testing.rs
# builds it: the same tag, so either may build it first.
TEST_IMAGE = "flotilla-test/busybox:latest"
TEST_PAGE = "flotilla test page\n"
BUSYBOX_PATH = Path("/bin/busybox")
TEST_IMAGE_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/www", "/etc", "/usr/bin", "/sbin", "/usr/sbin"]
RUN ["/bin/busybox", "--install", "-s"]
COPY passwd /etc/passwd
COPY group /etc/group
COPY index.html /www/index.html
CMD ["sh"]
"""
TEST_IMAGE_FILES = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "index.html": TEST_PAGE,
}

# busybox httpd ignores SIGTERM as PID 1; under a shell that traps it, a
# StopTask is answered at once instead of after the stop timeout.
HTTPD_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]

LABEL_CLUSTER = "com.flotilla.cluster"
LABEL_INSTANCE_ID = "com.flotilla.instance-id"


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = POLL_INTERVAL_S):
    """Polls `predicate` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    """A TCP port nothing listens on right now, on all addresses."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def docker(*args: str, check: bool = True, input: bytes | None = None,
           timeout: float = DOCKER_TIMEOUT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the Docker CLI; raises with its stderr when `check` and it fails."""
    done = subprocess.run(["docker", *args], capture_output=True, timeout=timeout, input=input,
                          env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done


def docker_available() -> bool:
    try:
        return docker("version", "--format", "{{.Server.APIVersion}}", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_test_image() -> None:
    """Builds TEST_IMAGE unless the engine has it, installing busybox-static
    first when the host has no static busybox. Idempotent."""
    if docker("image", "inspect", TEST_IMAGE, check=False).returncode == 0:
        return
    if not BUSYBOX_PATH.exists():
        install = ["apt-get", "install", "-y", "-q", "busybox-static"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, capture_output=True, env=env, timeout=300).returncode != 0:
            # A fresh machine has no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=300, check=True)
            subprocess.run(install, capture_output=True, env=env, timeout=300, check=True)
    with tempfile.TemporaryDirectory(prefix="flotilla-e2e-image-") as context:
        context_dir = Path(context)
        (context_dir / "busybox").write_bytes(BUSYBOX_PATH.read_bytes())
        (context_dir / "busybox").chmod(0o755)
        (context_dir / "Dockerfile").write_text(TEST_IMAGE_DOCKERFILE)
        for name, text in TEST_IMAGE_FILES.items():
            (context_dir / name).write_text(text)
        # The classic builder needs no base image and no buildx plugin.
        docker("build", "--quiet", "--tag", TEST_IMAGE, str(context_dir), env={"DOCKER_BUILDKIT": "0"})


def docker_ids(*filters: str, all_states: bool = True) -> list[str]:
    args = ["ps", "-q", "--no-trunc"] + (["-a"] if all_states else [])
    for item in filters:
        args += ["--filter", item]
    return docker(*args).stdout.decode().split()


def docker_inspect(container_id: str) -> dict:
    return json.loads(docker("inspect", container_id).stdout)[0]


def docker_logs(container_id: str) -> str:
    done = docker("logs", container_id)
    return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


def remove_docker_leftovers(instance_ids=(), clusters=()) -> None:
    """Removes the containers of these instances, their awsvpc task networks,
    and the volumes of these clusters: everything the tests' agents made."""
    containers = []
    for instance_id in instance_ids:
        containers += docker_ids(f"label={LABEL_INSTANCE_ID}={instance_id}")
    if containers:
        docker("rm", "-f", "-v", *sorted(set(containers)), check=False)
    for instance_id in instance_ids:
        remove_network(f"flotilla-awsvpc-{instance_id}")
    for cluster in clusters:
        volumes = docker("volume", "ls", "-q", "--filter", f"label={LABEL_CLUSTER}={cluster}").stdout.decode().split()
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)


# Every installation cuts its hosts' awsvpc task subnets (one /24 each) from
# this range; an engine shared with others holds some of it already.
TASK_SUBNETS_FIRST = (100 << 24) | (64 << 16)
TASK_SUBNETS_COUNT = 16384


def _cidr_bounds(cidr: str) -> tuple[int, int]:
    address, _, prefix = cidr.partition("/")
    value = int.from_bytes(bytes(int(part) for part in address.split(".")), "big")
    mask = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
    return value & mask, (value & mask) | (~mask & 0xFFFFFFFF)


def cidrs_overlap(a: str, b: str) -> bool:
    (a_first, a_last), (b_first, b_last) = _cidr_bounds(a), _cidr_bounds(b)
    return a_first <= b_last and b_first <= a_last


def engine_ipv4_subnets() -> dict[str, list[str]]:
    """Every network of the engine with its IPv4 subnets."""
    ids = docker("network", "ls", "-q").stdout.decode().split()
    if not ids:
        return {}
    done = docker("network", "inspect", *ids, check=False)
    found = {}
    for network in json.loads(done.stdout or b"[]"):
        configs = (network.get("IPAM") or {}).get("Config") or []
        found[network["Name"]] = [c["Subnet"] for c in configs if ":" not in c.get("Subnet", ":")]
    return found


def task_subnet(index: int) -> str:
    address = TASK_SUBNETS_FIRST + (index << 8)
    return ".".join(str((address >> shift) & 0xFF) for shift in (24, 16, 8, 0)) + "/24"


def create_network_on_first_free_task_subnet(name: str, attempts: int = 64) -> str:
    """Creates network `name` on the lowest task subnet no network of the
    engine holds (what a fresh installation would hand out first) and returns
    its subnet. Others may create networks meanwhile: a refused subnet is
    skipped."""
    refused: list[str] = []
    for _ in range(attempts):
        taken = [s for subnets in engine_ipv4_subnets().values() for s in subnets] + refused
        subnet = next(task_subnet(i) for i in range(TASK_SUBNETS_COUNT)
                      if not any(cidrs_overlap(task_subnet(i), t) for t in taken))
        done = docker("network", "create", "--driver", "bridge", "--subnet", subnet, name, check=False)
        if done.returncode == 0:
            return subnet
        if b"overlaps" not in done.stderr:
            raise RuntimeError(f"docker network create {name} failed: {done.stderr.decode(errors='replace')}")
        refused.append(subnet)
    raise AssertionError(f"no free task subnet for {name} after {attempts} attempts")


def remove_network(name: str) -> None:
    if docker("network", "inspect", name, check=False).returncode == 0:
        docker("network", "rm", name, check=False)


def instance_task_subnet(instance: dict) -> str:
    """The container instance's task subnet, from its network interface
    attachment (`subnetCidrBlock`)."""
    for attachment in instance.get("attachments", []):
        if attachment.get("type") == "ElasticNetworkInterface":
            for detail in attachment.get("details", []):
                if detail["name"] == "subnetCidrBlock":
                    return detail["value"]
    raise AssertionError(f"instance has no task subnet: {instance.get('attachments')}")


def curl(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """GETs `url` with curl: (curl's exit code, body)."""
    done = subprocess.run(["curl", "-fsS", "--noproxy", "*", "--max-time", str(timeout_s), url],
                          capture_output=True, text=True, timeout=timeout_s + 10)
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


def curl_until_ok(url: str, timeout_s: float = 15.0) -> str:
    """The body at `url` once it answers 2xx: a server in a fresh container
    may take a moment to bind."""
    last = [None]

    def attempt():
        code, body = curl(url, timeout_s=3)
        last[0] = (code, body)
        return body if code == 0 else None

    try:
        return wait_until(attempt, timeout_s, f"{url} to answer", interval_s=0.25)
    except AssertionError as error:
        raise AssertionError(f"{error}; last curl: {last[0]}") from None


@dataclass
class FlotillaAgent:
    """A `flotilla agent` process registered to `server`'s endpoint, with its
    own data directory and metadata port."""

    base_dir: Path
    server: FlotillaServer
    cluster: str
    metadata_port: int = 0
    extra_args: tuple = ()
    process: subprocess.Popen | None = None
    starts: int = 0
    # (access key id, secret) it signs with, when not the server's own key.
    credentials: tuple[str, str] | None = None

    def __post_init__(self):
        if not self.metadata_port:
            self.metadata_port = free_port()

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "agent-data"

    @property
    def stderr_path(self) -> Path:
        return self.base_dir / "agent.stderr.log"

    @property
    def simulated(self) -> bool:
        return "--simulate" in self.extra_args

    def start(self) -> "FlotillaAgent":
        assert not self.running, "already running"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base_dir),
            "RUST_LOG": os.environ.get("FLOTILLA_AGENT_LOG", "info,flotilla_agent=debug"),
            "RUST_BACKTRACE": "1",
            "NO_COLOR": "1",
            "AWS_ACCESS_KEY_ID": (self.credentials or (ACCESS_KEY_ID,))[0],
            "AWS_SECRET_ACCESS_KEY": (self.credentials or (None, SECRET_ACCESS_KEY))[1],
            "AWS_DEFAULT_REGION": self.server.region,
        }
        with open(self.stderr_path, "ab") as stderr:
            stderr.write(f"\n===== start #{self.starts} =====\n".encode())
            stderr.flush()
            self.process = subprocess.Popen(
                [
                    str(FLOTILLA_BIN), "agent",
                    "--endpoint", self.server.endpoint,
                    "--cluster", self.cluster,
                    "--data-dir", str(self.data_dir),
                    "--metadata-port", str(self.metadata_port),
                    "--image-pull-behavior", "prefer-cached",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=env,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def identity_paths(self) -> list[Path]:
        if self.simulated:
            return sorted(self.data_dir.glob("sim-*/identity.json"), key=lambda p: int(p.parent.name[4:]))
        return [self.data_dir / "identity.json"]

    def identities(self) -> list[dict]:
        """identity.json of each instance (sim-0, sim-1, ... in order)."""
        found = []
        for path in self.identity_paths():
            try:
                found.append(json.loads(path.read_text()))
            except (FileNotFoundError, json.JSONDecodeError):
                continue
        return found

    @property
    def instance_ids(self) -> list[str]:
        return [identity["instanceId"] for identity in self.identities()]

    @property
    def instance_arns(self) -> list[str]:
        return [identity.get("containerInstanceArn") for identity in self.identities()]

    @property
    def instance_arn(self) -> str:
        arns = self.instance_arns
        assert len(arns) == 1 and arns[0], f"expected one registered instance, got {arns}"
        return arns[0]

    def connected(self) -> bool:
        """Whether every instance is registered and its agent connected."""
        arns = self.instance_arns
        expected = self.expected_instances
        if len(arns) < expected or not all(arns):
            return False
        described = self.server.ecs.describe_container_instances(cluster=self.cluster, containerInstances=arns)
        return all(i.get("agentConnected") for i in described["containerInstances"]) and \
            len(described["containerInstances"]) == expected

    @property
    def expected_instances(self) -> int:
        if self.simulated:
            return int(self.extra_args[list(self.extra_args).index("--simulate") + 1])
        return 1

    def wait_connected(self, timeout_s: float = AGENT_REGISTER_TIMEOUT_S) -> "FlotillaAgent":
        def ready():
            if not self.running:
                raise AssertionError(f"flotilla agent exited with {self.process.returncode}:\n{self.stderr_tail()}")
            return self.connected()

        try:
            wait_until(ready, timeout_s, "the agent to register and connect")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.stderr_tail()}") from None
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=AGENT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"flotilla agent ignored signal {sig} for {AGENT_STOP_TIMEOUT_S}s")

    def stop(self) -> None:
        """SIGTERM (containers keep running), SIGKILL if it lingers."""
        try:
            self.kill(signal.SIGTERM)
        except AssertionError:
            pass

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no stderr yet)"
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


def register_task_definition(ecs, family: str, containers: list[dict], **params) -> str:
    """Registers a revision and returns its ARN."""
    answer = ecs.register_task_definition(family=family, containerDefinitions=containers, **params)
    return answer["taskDefinition"]["taskDefinitionArn"]


def run_tasks(ecs, cluster: str, task_definition: str, count: int = 1, **params) -> list[dict]:
    """RunTask that must place every task; returns the tasks."""
    answer = ecs.run_task(cluster=cluster, taskDefinition=task_definition, count=count, **params)
    assert answer["failures"] == [], answer["failures"]
    assert len(answer["tasks"]) == count
    return answer["tasks"]


def describe_tasks(ecs, cluster: str, arns: list[str]) -> list[dict]:
    answer = ecs.describe_tasks(cluster=cluster, tasks=arns)
    assert answer["failures"] == [], answer["failures"]
    by_arn = {task["taskArn"]: task for task in answer["tasks"]}
    return [by_arn[arn] for arn in arns]


def wait_tasks_status(ecs, cluster: str, arns: list[str], status: str,
                      timeout_s: float = TASK_TIMEOUT_S) -> list[dict]:
    """Waits until every task's lastStatus is `status`; a task that stops on
    the way to RUNNING fails at once with its reasons."""
    last = []

    def reached():
        tasks = describe_tasks(ecs, cluster, arns)
        last[:] = tasks
        if status != "STOPPED":
            for task in tasks:
                if task["lastStatus"] == "STOPPED":
                    raise AssertionError(f"task stopped while waiting for {status}: {describe_stop(task)}")
        return tasks if all(task["lastStatus"] == status for task in tasks) else None

    try:
        return wait_until(reached, timeout_s, f"{len(arns)} task(s) to be {status}")
    except AssertionError as error:
        if "timed out" in str(error):
            raise AssertionError(f"{error}; last seen: {[describe_stop(t) for t in last]}") from None
        raise


def describe_stop(task: dict) -> dict:
    """What a failure message needs of a task."""
    return {
        "task": task["taskArn"].rsplit("/", 1)[-1],
        "lastStatus": task.get("lastStatus"),
        "stopCode": task.get("stopCode"),
        "stoppedReason": task.get("stoppedReason"),
        "containers": [
            {k: c.get(k) for k in ("name", "lastStatus", "exitCode", "reason")} for c in task.get("containers", [])
        ],
    }


def container_of(task: dict, name: str) -> dict:
    matches = [c for c in task["containers"] if c["name"] == name]
    assert matches, f"task has no container {name}: {[c['name'] for c in task['containers']]}"
    return matches[0]


def private_ipv4_of(task: dict) -> str:
    """The awsvpc task's address, from its ElasticNetworkInterface attachment."""
    for attachment in task.get("attachments", []):
        if attachment.get("type") == "ElasticNetworkInterface":
            for detail in attachment.get("details", []):
                if detail["name"] == "privateIPv4Address":
                    return detail["value"]
    raise AssertionError(f"task has no privateIPv4Address: {task.get('attachments')}")


def resources_by_name(resources: list[dict]) -> dict:
    """CPU/MEMORY → integerValue, PORTS/PORTS_UDP → set of strings."""
    out = {}
    for resource in resources:
        if resource["type"] == "STRINGSET":
            out[resource["name"]] = set(resource.get("stringSetValue", []))
        else:
            out[resource["name"]] = resource.get("integerValue")
    return out


def aws_cli_v2() -> str:
    """The AWS CLI version 2, for what only it does (`aws logs tail`) and for
    the older protocols its 2.9 release speaks (CloudWatch in Query). It is
    not on PyPI; Debian packages it (`apt-get install awscli` on Debian 12
    installs 2.9). FLOTILLA_AWS_CLI_V2 names another one."""
    for candidate in (os.environ.get("FLOTILLA_AWS_CLI_V2"), "/usr/bin/aws", shutil.which("aws")):
        if not candidate or not os.path.exists(candidate):
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout
        if version.startswith("aws-cli/2."):
            return candidate
    if os.environ.get("FLOTILLA_E2E_SKIP_AWSCLI_V2") == "1":
        pytest.skip("no AWS CLI version 2, and FLOTILLA_E2E_SKIP_AWSCLI_V2=1")
    pytest.fail("this test needs the AWS CLI version 2: `apt-get install awscli` (Debian 12) "
                "or set FLOTILLA_AWS_CLI_V2 (FLOTILLA_E2E_SKIP_AWSCLI_V2=1 skips these tests)")
