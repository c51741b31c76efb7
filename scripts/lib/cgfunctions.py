"""Instructions per request by function, from a callgrind profile of meridian-host.

The component's code is compiled by wasmtime at run time, so callgrind sees it only as
addresses; with MERIDIAN_HOST_PERFMAP=1 the host writes /tmp/perf-PID.map, which names them.
Usage: cgfunctions.py CALLGRIND_OUT PERF_MAP REQUESTS TOP [inclusive]
Prints the split (component, host, host libc), then the TOP functions, each marked
C (component) or H (host), per request; `inclusive` lists only the component's functions, each
with everything it calls, host calls included.
"""
import bisect
import collections
import re
import subprocess
import sys

cg, mapf, n, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
inclusive = len(sys.argv) > 5 and sys.argv[5] == "inclusive"

syms = []
for line in open(mapf):
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) == 3:
        syms.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
syms.sort()
starts = [s[0] for s in syms]

args = ["callgrind_annotate", "--threshold=100"] + (["--inclusive=yes"] if inclusive else []) + [cg]
out = subprocess.run(args, capture_output=True, text=True, check=True).stdout


def demangle(name):
    name = re.sub(r"^wasm\[\d+\]::function\[\d+\]::", "", name)
    try:
        return subprocess.run(["c++filt"], input=name, capture_output=True, text=True).stdout.strip() or name
    except FileNotFoundError:
        return name


by_fn = collections.Counter()
split = collections.Counter()
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
        by_fn["C " + name] += ir
        split["component"] += ir
    else:
        fn = re.sub(r" \[.*\]$", "", rest.split(":", 1)[1] if ":" in rest else rest)
        split["host libc" if "libc.so" in rest else "host"] += ir
        by_fn["H " + fn] += ir

if not inclusive:
    total = sum(split.values())
    print("  per request: " + ", ".join(f"{k} {v // n:,}" for k, v in split.items()) + f"; total {total // n:,}")
shown = 0
for name, ir in by_fn.most_common():
    kind, fn = name.split(" ", 1)
    if kind == "C":
        fn = demangle(fn)
    if inclusive:
        # What a function of the component costs with everything it calls (host calls
        # included): the runtime's frames, trampolines and the export glue say nothing here.
        if kind != "C" or re.search(r"trampoline|^wasm\[|^wasmtime_|^module_start|#handle$|__spin_wasi_http|_export_|Guest|handler", fn):
            continue
    print(f"  {ir // n:>9,}  {kind}  {fn[:110]}")
    shown += 1
    if shown == top:
        break
