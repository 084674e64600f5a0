"""The README's examples, run in order as a user pastes them into one shell,
with the AWS CLI, the Docker CLI and `flotilla`, against a fresh `flotilla
up`: so that the README cannot drift from what works.

Every ```sh and ```python block of README.md runs, in document order,
unless the line before it is `<!-- readme-example: not run (WHY) -->`.
What differs from a user's machine is substituted, and each substitution
must find its text: the endpoint's port (tests never take a fixed port),
and a small local image standing in for `nginx` and for the user's own
`web:latest` (nothing can be pulled from a public registry here). The shell
is bash with aliases on, as an interactive one has them; a failing command
fails the test.

Heavy (marked `docker`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecr_support import registry_host
from support import (
    AWS_CLI,
    FLOTILLA_BIN,
    REPO_ROOT,
    TEST_IMAGE,
    docker,
    free_port,
    unique,
    wait_until,
)

pytestmark = pytest.mark.docker

README = REPO_ROOT / "README.md"
NOT_RUN = re.compile(r"<!--\s*readme-example:\s*not run\b.*-->")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[a-z]*)[ \t]*$")
BLOCK_MARKER = "@@@ readme block"
# The whole walk-through, rolling deployments and waiters included.
README_TIMEOUT_S = 15 * 60
README_PORT = "8440"


@dataclass
class Block:
    language: str
    text: str
    line: int


def readme_blocks(text: str) -> list[Block]:
    """The runnable fenced blocks, in order."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened or not opened.group("language"):
            index += 1
            continue
        indent, language, start = opened.group("indent"), opened.group("language"), index
        body = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(indent):] if lines[index].startswith(indent) else lines[index])
            index += 1
        index += 1
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        if language in ("sh", "python") and not NOT_RUN.search(previous):
            blocks.append(Block(language, "\n".join(body) + "\n", start + 1))
    return blocks


def test_readme_blocks_are_found_and_marked():
    """The extraction itself: blocks that cannot run are marked, and the
    runnable ones are the walk-through's."""
    blocks = readme_blocks(README.read_text())
    assert [b.language for b in blocks].count("python") == 1
    joined = "".join(b.text for b in blocks)
    for expected in ("alias ecs=", "ecs update-service", "flotilla service deploy", "update-task-protection",
                     "docker push", "flotilla placement explain"):
        assert expected in joined, expected
    # Placeholders and the set-up commands are not run.
    assert "CONTROL-PLANE" not in joined and "cargo xtask test" not in joined


def build_standin(tag: str) -> None:
    """The test image serving its page on port 80 and stopping at SIGTERM,
    as nginx does."""
    with tempfile.TemporaryDirectory(prefix="flotilla-readme-image-") as context:
        (Path(context) / "Dockerfile").write_text(
            f"FROM {TEST_IMAGE}\n"
            'CMD ["sh", "-c", "trap \'exit 0\' TERM; httpd -f -p 80 -h /www & wait"]\n')
        docker("build", "--quiet", "--tag", tag, context, env={"DOCKER_BUILDKIT": "0"})


def substitute(text: str, replacements: list[tuple[str, str]]) -> tuple[str, set[str]]:
    used = set()
    for old, new in replacements:
        if old in text:
            used.add(old)
            text = text.replace(old, new)
    return text, used


def script_of(blocks: list[Block], replacements: list[tuple[str, str]]) -> tuple[str, set[str]]:
    parts = ["set -euo pipefail", "shopt -s expand_aliases"]
    used = set()
    for number, block in enumerate(blocks):
        text, found = substitute(block.text, replacements)
        used |= found
        parts.append(f"echo '{BLOCK_MARKER} {number} (README.md line {block.line})'")
        if block.language == "python":
            parts.append(f'"$README_PYTHON" - <<\'README_PYTHON_EOF\'\n{text}README_PYTHON_EOF')
        else:
            parts.append(text)
    return "\n".join(parts) + "\n", used


def outputs_by_block(stdout: str) -> dict[int, str]:
    found, current = {}, None
    for line in stdout.splitlines():
        if line.startswith(BLOCK_MARKER):
            current = int(line.split()[3])
            found[current] = ""
        elif current is not None:
            found[current] += line + "\n"
    return found


@pytest.fixture
def up(docker_ready, server_factory):
    return server_factory(command="up", extra_args=("--agent-metadata-port", str(free_port())))


def test_the_readme_examples_work_when_pasted_in_order(up, tmp_path):
    # Unique on this engine: other runs of this test may share it.
    nginx = f"flotilla-e2e/nginx-standin:{os.getpid()}-{unique('readme')}"
    build_standin(nginx)
    pushed = f"{registry_host(up)}/team/web:v1"
    blocks = readme_blocks(README.read_text())
    replacements = [
        ("http://127.0.0.1:8440", up.endpoint),
        ("localhost:8440", registry_host(up)),
        ('"image":"nginx"', f'"image":"{nginx}"'),
        ("docker tag web:latest", f"docker tag {nginx}"),
    ]
    script, used = script_of(blocks, replacements)
    assert used == {old for old, _ in replacements}, f"the README no longer has {set(o for o, _ in replacements) - used}"
    (tmp_path / "readme.sh").write_text(script)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.pathsep.join([str(AWS_CLI.parent), str(FLOTILLA_BIN.parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "NO_COLOR": "1",
        "LANG": "C.UTF-8",
        "README_PYTHON": sys.executable,
    }
    wait_until(lambda: up.ecs.list_container_instances(cluster="default")["containerInstanceArns"], 30,
               "the local agent to register, as `flotilla up` does before a user's first command")
    # A file, not a pipe: the hosts it starts in the background keep their
    # end of a pipe open after the script ends.
    transcript = tmp_path / "readme.out"
    with open(transcript, "wb") as out:
        process = subprocess.Popen(["bash", str(tmp_path / "readme.sh")], cwd=tmp_path, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        process.wait(timeout=README_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the README's examples did not finish in {README_TIMEOUT_S}s:\n"
                             f"{transcript.read_text(errors='replace')[-6000:]}") from None
    finally:
        # Its own session: this stops the hosts it started in the background.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        docker("rmi", "-f", nginx, pushed, check=False)
    stdout = transcript.read_text(errors="replace")
    assert process.returncode == 0, f"a README command failed (exit {process.returncode}):\n{stdout[-6000:]}"

    outputs = outputs_by_block(stdout)
    assert len(outputs) == len(blocks), sorted(outputs)

    def output_of(source: str) -> str:
        """The output of the block whose commands include `source`."""
        [number] = [n for n, block in enumerate(blocks) if source in block.text]
        return outputs[number]

    # What each part promised, seen in its output.
    # --family-prefix names a whole family: nginx's revisions, not an empty list.
    assert re.search(r'"taskDefinitionArns": \[\s*"arn:aws:ecs:us-east-1:000000000000:task-definition/nginx:1"\s*\]',
                     output_of("--family-prefix")), output_of("--family-prefix")
    assert re.search(r'"hostPort": \d+', output_of("networkBindings"))
    assert "completed" in output_of("flotilla service deploy")
    assert '"protectionEnabled": true' in output_of("get-task-protection")
    ecr = up.client("ecr")
    digest = ecr.describe_images(repositoryName="team/web")["imageDetails"][0]["imageDigest"]
    assert json.loads(output_of("imageDigest")[output_of("imageDigest").rindex("["):]) == [pushed, digest]
    assert "cluster/web" in output_of("import boto3")
    assert "1 of 1 task(s) placed" in output_of("flotilla placement explain")

    # And the state they left is what the README says they do.
    ecs = up.ecs
    [web] = ecs.describe_services(cluster="default", services=["web"])["services"]
    assert web["status"] == "INACTIVE"
    families = ecs.list_task_definitions(familyPrefix="nginx")["taskDefinitionArns"]
    assert [arn.rsplit(":", 1)[1] for arn in families] == ["1", "2"]
    tagged = ecs.list_tags_for_resource(resourceArn="arn:aws:ecs:us-east-1:000000000000:cluster/web")["tags"]
    assert tagged == [{"key": "team", "value": "a"}]
    [api] = ecs.describe_services(cluster="web", services=["api"])["services"]
    assert api["desiredCount"] == 8
    placed = [t for t in ecs.describe_tasks(cluster="web", tasks=ecs.list_tasks(cluster="web")["taskArns"])["tasks"]
              if not t["group"].startswith("service:")]
    providers = sorted(t["capacityProviderName"] for t in placed)
    assert providers.count("ondemand") == 4 and providers.count("spot") == 6, providers
    print(json.dumps({"blocks": len(blocks)}))
