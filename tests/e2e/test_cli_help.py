"""The `flotilla` binary's own command line."""

import subprocess

import pytest

from support import FLOTILLA_BIN


def run(*args):
    return subprocess.run([str(FLOTILLA_BIN), *args], capture_output=True, text=True, timeout=30)


def test_top_level_help_lists_the_commands():
    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert "Amazon ECS API" in done.stdout
    for command in ("server", "up"):
        assert command in done.stdout
    assert "--log-format" in done.stdout


@pytest.mark.parametrize("command", ["server", "up"])
def test_command_help_lists_the_options(command):
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--listen", "--data-dir", "--region", "--account-id", "--credentials-file"):
        assert option in done.stdout, option
    assert "us-east-1" in done.stdout
    assert "000000000000" in done.stdout


def test_version():
    done = run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flotilla ")


def test_unknown_command_is_a_usage_error():
    done = run("launch-rockets")
    assert done.returncode == 2
    assert "launch-rockets" in done.stderr


def test_bad_listen_address_is_refused(tmp_path):
    done = run("server", "--listen", "not-an-address", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "--listen" in done.stderr
