#!/usr/bin/env python3
"""Type keys into a command on a pseudo-terminal, as a person at a terminal.

argv[1] is a JSON list of key strings; argv[2:] is the command. Each key
string is written at once, then the output is read until it has been quiet
for 300 ms (5 s at most). Prints one JSON line: the output after each key
string (the first entry: the output before any key).
"""
import json
import os
import pty
import select
import sys
import time


def settle(fd):
    out = b""
    end = time.time() + 5
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.3)
        if not r:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode("utf-8", "replace")


keys = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm-256color"
    os.execvp(sys.argv[2], sys.argv[2:])
outputs = [settle(fd)]
for k in keys:
    os.write(fd, k.encode())
    outputs.append(settle(fd))
# The session ends on the last key (exit); never wait forever.
for _ in range(50):
    done, _ = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.1)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps(outputs))
