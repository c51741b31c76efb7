"""Reads a callgrind profile of meridian-host: each function's instructions, the component's by
name. The component's code is compiled by wasmtime at run time, so callgrind sees it only as
addresses; with MERIDIAN_HOST_PERFMAP=1 the host writes /tmp/perf-PID.map, which names them.
Shared by cgfunctions.py (by function) and cgstages.py (by stage)."""
import bisect
import re
import subprocess


# Frames where wasmtime switches to a fiber's stack (and the thread entry below them): callgrind
# lists each with a self cost equal to everything run on the fiber, which is also counted where
# it ran, so a WASI 0.3 profile's self costs summed to twice its total and more. Their own work is
# a few instructions a switch; in self costs they are left out.
FIBER_FRAMES = re.compile(r"^(clone|wasmtime_internal_fiber::(Suspend<.*>::execute|unix::fiber_start))$")


def program_total(cg):
    """The profile's total instructions, as callgrind wrote it (`summary:` or `totals:`)."""
    for line in open(cg):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"{cg}: no summary or totals line")


def functions(cg, mapf, inclusive=False):
    """(instructions, where, name) per function: where is "component", "host" or "host libc";
    a component function's name is its symbol without wasmtime's `wasm[N]::function[M]::`."""
    syms = []
    for line in open(mapf):
        parts = line.rstrip("\n").split(" ", 2)
        if len(parts) == 3:
            syms.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
    syms.sort()
    starts = [s[0] for s in syms]
    args = ["callgrind_annotate", "--threshold=100"] + (["--inclusive=yes"] if inclusive else []) + [cg]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        ir, rest = int(m[1].replace(",", "")), m[2]
        jit = re.match(r"\?\?\?:0x([0-9a-f]+) \[\?\?\?\]", rest)
        if jit:
            addr = int(jit[1], 16)
            i = bisect.bisect_right(starts, addr) - 1
            name = syms[i][2] if i >= 0 and addr < syms[i][0] + syms[i][1] else "(unnamed compiled code)"
            yield ir, "component", re.sub(r"^wasm\[\d+\]::function\[\d+\]::", "", name)
        else:
            fn = re.sub(r" \[.*\]$", "", rest.split(":", 1)[1] if ":" in rest else rest)
            if not inclusive and FIBER_FRAMES.match(fn):
                continue
            yield ir, "host libc" if "libc.so" in rest else "host", fn
