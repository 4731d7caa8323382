"""Run a child process (and everything it starts) with a deadline, and never leave it behind.

The child gets its own process group; on a timeout, an error or a failed test the whole group
is killed with SIGKILL (a torchrun rank that ignores SIGTERM dies too), so a test that starts
processes cannot hang the suite or leave work running on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

import pytest


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of ``process`` (ignore one that is already gone)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_group(command: Sequence[str], *, timeout: float, **options: object
              ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a new session, killing the whole group when it must stop.

    Fails the test (with the output so far) when the deadline passes.
    """
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, **options)  # type: ignore[arg-type]
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"{command[:6]} did not finish in {timeout:.0f} s; its process group was "
                    f"killed. stdout: {stdout[-2000:]!r} stderr: {stderr[-2000:]!r}")
    except BaseException:
        kill_group(process)
        raise
    finally:
        if process.poll() is None:
            kill_group(process)
    # A rank that outlives its launcher is killed with the rest of the group.
    kill_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
