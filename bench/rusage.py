"""Run a command; write its exit status, peak RSS and CPU time to a JSON file.

    python -m bench.rusage OUT.json COMMAND [ARG...]

The harness cannot read a child's peak memory itself: at ``exec`` Linux keeps the peak
of the address space being replaced in the process's ``ru_maxrss``, and a child spawned
by the harness starts out in the harness's address space (vfork), which holds the fake
Clerk's users. Spawned from this small process instead, the figure is the command's own.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    out, command = argv[1], argv[2:]
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    figures = {"exit": code, "peak_rss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}
    with open(out, "w") as file:
        json.dump(figures, file)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
