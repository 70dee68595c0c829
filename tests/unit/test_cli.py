import subprocess
import sys

from workers.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "workers.cli", "--help"], capture_output=True, text=True, check=True)
    assert "outdial <command>" in out.stdout


def test_malformed_variable_stops_a_command_naming_it():
    env = {"MAX_TRIES": "abc", "PATH": ""}
    proc = subprocess.run([sys.executable, "-m", "workers.cli", "config"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "MAX_TRIES" in proc.stderr
