"""What a new user meets on a first run: each command's help lists its own
options, logs are plain text unless they go to a terminal, and `flotilla
server` / `up` serve the region the user's AWS configuration names, as the
AWS CLI on the same machine signs for."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time

import pytest

from support import (
    ACCESS_KEY_ID,
    AWS_CLI,
    CLI_TIMEOUT_S,
    FLOTILLA_BIN,
    SECRET_ACCESS_KEY,
    free_port,
    wait_until,
)

ESCAPE = "\x1b["
START_TIMEOUT_S = 20.0


def run(*args, env=None):
    return subprocess.run([str(FLOTILLA_BIN), *args], capture_output=True, text=True, timeout=30, env=env)


# ---- help -----------------------------------------------------------------------


def test_server_help_lists_only_the_servers_options():
    server = run("server", "--help")
    assert server.returncode == 0, server.stderr
    assert "--agent-metadata-port" not in server.stdout
    for option in ("--listen", "--data-dir", "--region", "--account-id", "--credentials-file", "--registry-host"):
        assert option in server.stdout, option
    up = run("up", "--help")
    assert up.returncode == 0, up.stderr
    # `up` has the server's options and its local agent's own.
    for option in ("--listen", "--data-dir", "--region", "--agent-metadata-port"):
        assert option in up.stdout, option
    refused = run("server", "--agent-metadata-port", "1234")
    assert refused.returncode == 2
    assert "--agent-metadata-port" in refused.stderr


# ---- log colour ---------------------------------------------------------------


def plain_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    env["RUST_LOG"] = "info"
    env.update(extra)
    return env


def start_server(tmp_path, env, stderr):
    return subprocess.Popen(
        [str(FLOTILLA_BIN), "server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--region", "us-east-1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
    )


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stderr_through_a_file(tmp_path, env) -> str:
    log = tmp_path / "server.log"
    with open(log, "wb") as stderr:
        process = start_server(tmp_path, env, stderr)
    try:
        wait_until(lambda: "flotilla is serving" in log.read_text(errors="replace"), START_TIMEOUT_S,
                   "the server to start")
    finally:
        stop(process)
    return log.read_text(errors="replace")


def stderr_through_a_terminal(tmp_path, env) -> str:
    controller, terminal = pty.openpty()
    process = start_server(tmp_path, env, terminal)
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"flotilla is serving" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(controller, 65536)
                except OSError:
                    break
    finally:
        stop(process)
        os.close(controller)
    text = seen.decode(errors="replace")
    assert "flotilla is serving" in text, text
    return text


def test_logs_to_a_file_are_plain_text(tmp_path):
    text = stderr_through_a_file(tmp_path, plain_env())
    assert ESCAPE not in text, repr(text[:400])
    assert re.search(r"INFO flotilla: flotilla is serving", text), text


def test_logs_to_a_terminal_are_coloured_unless_no_color_is_set(tmp_path):
    coloured = stderr_through_a_terminal(tmp_path / "colour", plain_env())
    assert ESCAPE in coloured, repr(coloured[:400])
    plain = stderr_through_a_terminal(tmp_path / "no-colour", plain_env(NO_COLOR="1"))
    assert ESCAPE not in plain, repr(plain[:400])


# ---- regions ------------------------------------------------------------------------


def aws_env(home, **settings) -> dict:
    """A user's shell: credentials, and only the AWS settings given."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.update(settings)
    return env


def aws(server, env, *args):
    done = subprocess.run([str(AWS_CLI), "--endpoint-url", server.endpoint, "--output", "json", "ecs", *args],
                          env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def write_config(home, text: str):
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    path = home / ".aws" / "config"
    path.write_text(text)
    return path


CONFIG = """[default]
region = eu-west-1
output = json

[profile tokyo]
region = ap-northeast-1
"""


@pytest.mark.parametrize(
    "case, settings, expected_region, expected_source",
    [
        ("AWS_DEFAULT_REGION", {"AWS_DEFAULT_REGION": "eu-north-1"}, "eu-north-1", "AWS_DEFAULT_REGION"),
        ("the default profile", {}, "eu-west-1", "profile default in {config}"),
        ("AWS_PROFILE", {"AWS_PROFILE": "tokyo"}, "ap-northeast-1", "profile tokyo in {config}"),
    ],
)
def test_the_server_serves_the_region_the_users_aws_configuration_names(
        server_factory, tmp_path, case, settings, expected_region, expected_source):
    home = tmp_path / "home"
    config = write_config(home, CONFIG)
    env = aws_env(home, **settings)
    # The server runs in the same shell and reads ~/.aws/config, as the AWS CLI does.
    server = server_factory(pass_region=False, region=expected_region,
                            extra_env={**settings, "HOME": str(home), "AWS_CONFIG_FILE": ""})
    said = f"It serves region {expected_region} (from {expected_source.format(config=config)})"
    assert said in server.stdout_text(), server.stdout_text()

    # The AWS CLI, configured the same way and given no region, is served.
    created = aws(server, env, "create-cluster", "--cluster-name", "home")
    assert created["cluster"]["clusterArn"] == f"arn:aws:ecs:{expected_region}:000000000000:cluster/home"
    assert aws(server, env, "list-clusters")["clusterArns"] == [created["cluster"]["clusterArn"]]


def test_aws_region_comes_before_aws_default_region(server_factory, tmp_path):
    """As the AWS SDKs and the AWS CLI v2 read them (the pinned CLI v1 and
    boto3 read only AWS_DEFAULT_REGION, so the client here names its region)."""
    home = tmp_path / "home"
    write_config(home, CONFIG)
    server = server_factory(pass_region=False, region="ca-central-1", extra_env={
        "HOME": str(home), "AWS_CONFIG_FILE": "", "AWS_REGION": "ca-central-1", "AWS_DEFAULT_REGION": "eu-north-1"})
    assert "It serves region ca-central-1 (from AWS_REGION)" in server.stdout_text()
    arn = server.ecs.create_cluster(clusterName="sdk")["cluster"]["clusterArn"]
    assert arn == "arn:aws:ecs:ca-central-1:000000000000:cluster/sdk"


def test_the_flag_wins_and_nothing_configured_means_us_east_1(server_factory, tmp_path):
    home = tmp_path / "home"
    write_config(home, CONFIG)
    server = server_factory(pass_region=False, region="us-east-1",
                            extra_env={"HOME": str(home / "elsewhere"), "AWS_CONFIG_FILE": ""})
    assert "It serves region us-east-1 (from no region configured" in server.stdout_text()
    flagged = server_factory(pass_region=True, region="sa-east-1",
                             extra_env={"HOME": str(home), "AWS_CONFIG_FILE": "", "AWS_REGION": "eu-west-3"})
    assert "It serves region sa-east-1 (from --region)" in flagged.stdout_text()
    assert flagged.ecs.create_cluster(clusterName="c")["cluster"]["clusterArn"].startswith("arn:aws:ecs:sa-east-1:")


def test_a_request_for_another_region_says_how_to_fix_it(server_factory, tmp_path):
    """A user whose AWS configuration names another region than the server
    serves is told both fixes, and the request changes nothing."""
    server = server_factory(pass_region=True, region="us-east-1")
    env = aws_env(tmp_path / "home", AWS_DEFAULT_REGION="eu-west-1")
    done = subprocess.run([str(AWS_CLI), "--endpoint-url", server.endpoint, "ecs", "create-cluster",
                           "--cluster-name", "elsewhere"], env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)
    assert done.returncode != 0
    assert "(InvalidSignatureException)" in done.stderr, done.stderr
    assert "Credential should be scoped to a valid region, not 'eu-west-1'." in done.stderr
    assert "--region us-east-1 on the AWS CLI" in done.stderr
    assert "flotilla up --region eu-west-1" in done.stderr
    assert server.ecs.list_clusters()["clusterArns"] == []


def test_a_malformed_region_is_refused_at_start(tmp_path):
    done = run("server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
               env={**os.environ, "AWS_REGION": "Europe (Ireland)"})
    assert done.returncode != 0
    assert 'region "Europe (Ireland)" (from AWS_REGION) is not a region name such as eu-west-1' in done.stderr


@pytest.mark.docker
def test_up_and_its_agent_serve_the_configured_region(docker_ready, server_factory, tmp_path):
    home = tmp_path / "home"
    write_config(home, CONFIG)
    env = aws_env(home)
    up = server_factory(command="up", pass_region=False, region="eu-west-1",
                        extra_args=("--agent-metadata-port", str(free_port())),
                        extra_env={"HOME": str(home), "AWS_CONFIG_FILE": ""})
    assert "It serves region eu-west-1 (from profile default in" in up.stdout_text()
    # The local agent signs for the same region, so it registers.
    arns = wait_until(lambda: aws(up, env, "list-container-instances")["containerInstanceArns"], 30,
                      "the local agent to register")
    assert arns[0].startswith("arn:aws:ecs:eu-west-1:000000000000:container-instance/default/")
