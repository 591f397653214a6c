"""Process helpers for the tests: only this test process's own descendants are ever looked at."""
from __future__ import annotations

import os


def descendants(pid: int) -> list:
    """PIDs of all live descendants of ``pid`` (Linux /proc), zombies excluded."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] != "Z":
            children.setdefault(int(rest[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def listening(pids) -> list:
    """(address, port) of the TCP sockets in LISTEN state held open by the given processes."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:                  # 0A: LISTEN
                addr, port = f[1].split(":")
                out.append((addr, int(port, 16)))
    return out


def loopback(hex_addr: str) -> bool:
    """Whether a /proc/net/tcp{,6} address is a loopback address."""
    if len(hex_addr) == 8:                                      # IPv4, little-endian
        return hex_addr.endswith("7F")                          # 127.x.x.x
    return hex_addr == "00000000000000000000000001000000" or (   # ::1
        hex_addr.startswith("0000000000000000FFFF0000") and hex_addr.endswith("7F"))  # ::ffff:127/8
