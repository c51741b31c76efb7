"""Instructions per request by function, from a callgrind profile of meridian-host.

The component's code is compiled by wasmtime at run time, so callgrind sees it only as
addresses; with MERIDIAN_HOST_PERFMAP=1 the host writes /tmp/perf-PID.map, which names them.
Usage: cgfunctions.py CALLGRIND_OUT PERF_MAP REQUESTS TOP [inclusive]
Prints the split (component, host, host libc), then the TOP functions, each marked
C (component) or H (host), per request; `inclusive` lists only the component's functions, each
with everything it calls, host calls included.
"""
import collections
import re
import subprocess
import sys

import cgread

cg, mapf, n, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
inclusive = len(sys.argv) > 5 and sys.argv[5] == "inclusive"



def demangle(name):
    name = re.sub(r"^wasm\[\d+\]::function\[\d+\]::", "", name)
    try:
        return subprocess.run(["c++filt"], input=name, capture_output=True, text=True).stdout.strip() or name
    except FileNotFoundError:
        return name


by_fn = collections.Counter()
split = collections.Counter()
for ir, where, name in cgread.functions(cg, mapf, inclusive):
    by_fn[("C " if where == "component" else "H ") + name] += ir
    split[where] += ir

if not inclusive:
    total = cgread.program_total(cg)
    print("  per request: " + ", ".join(f"{k} {v // n:,}" for k, v in split.items()) + f"; total {total // n:,}")
    listed = sum(split.values())
    if abs(listed - total) * 100 > total:
        print(f"  (the functions listed add up to {listed // n:,} a request)")
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
