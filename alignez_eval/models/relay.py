"""Running a child process (pip, the conversion) with its output relayed to our stderr."""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys


def run_relayed(cmd: list[str], env: dict[str, str] | None = None, tail_lines: int = 3) -> tuple[int, str]:
    """Run `cmd` with its stdout and stderr relayed line by line to our `sys.stderr`; return
    (exit code, its last `tail_lines` non-empty lines) for the error message.

    Relayed, not inherited: `sys.stderr` may be an object with no file descriptor (pytest's
    capsys, a notebook, contextlib.redirect_stderr), where `stdout=sys.stderr` raises
    io.UnsupportedOperation: fileno. And not our stdout: `alignez-eval models path` prints only
    the path there.
    """
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          env=env, text=True, errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                tail.append(line.strip())
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr must not stop the child
                sys.stderr.write(line)
                sys.stderr.flush()
    return proc.returncode, " | ".join(tail)
