"""The entry point ends the process without Python's teardown (gpt2tui/cli.py, _exit_now): the
status, the streams and the exit handlers must be what a normal exit gives, and it must not cut
short a thread that a normal exit would wait for. Each case is a real process."""

import subprocess
import sys
import textwrap


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_the_status_the_streams_and_the_exit_handlers_survive():
    done = _python(
        """
        import atexit, sys
        from gpt2tui.cli import _exit_now
        atexit.register(lambda: print("exit handler ran"))
        sys.stdout.write("buffered, no newline")
        sys.stderr.write("to stderr")
        _exit_now(3)
        print("not reached")
        """
    )
    assert done.returncode == 3
    assert done.stdout == "buffered, no newlineexit handler ran\n"
    assert done.stderr == "to stderr"


def test_a_message_code_is_printed_with_status_1_and_none_is_0():
    message = _python("from gpt2tui.cli import _exit_now\n_exit_now('cannot go on')")
    assert (message.returncode, message.stderr) == (1, "cannot go on\n")
    assert _python("from gpt2tui.cli import _exit_now\n_exit_now(None)").returncode == 0


def test_a_running_non_daemon_thread_gets_the_normal_exit():
    done = _python(
        """
        import threading, time
        from gpt2tui.cli import _exit_now
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished", flush=True))).start()
        _exit_now(0)
        print("normal exit instead")
        """
    )
    assert done.returncode == 0
    assert done.stdout.split() == ["normal", "exit", "instead", "thread", "finished"]


def test_real_commands_keep_their_status_and_output_through_a_pipe(tmp_path):
    def gpt2tui(*args):
        return subprocess.run([sys.executable, "-m", "gpt2tui", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    help_text = gpt2tui("train", "--help")
    assert help_text.returncode == 0 and "--max-steps" in help_text.stdout
    assert help_text.stdout.rstrip().endswith("Show this message and exit.")  # click's last line: all of it came through
    bad = gpt2tui("train", "--max-steps", "many")
    assert bad.returncode == 2 and "many" in bad.stderr and "Traceback" not in bad.stderr
    missing = gpt2tui("generate", "--checkpoint", str(tmp_path / "none"), "--prompt", "x")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and missing.stderr.startswith("Error:")
