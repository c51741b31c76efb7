"""Where a request's instructions go, by stage, from a callgrind profile of meridian-host.

Usage: cgstages.py CALLGRIND_OUT PERF_MAP REQUESTS
Every instruction of the component is counted once, in the stage its function belongs to (its
self cost, classified by the function's name: see STAGES); what the host does when the
component calls it (a host call: headers, bodies, clocks, variables, stdout) is counted as the
import wrapper's cost beyond its own; the rest of the host (instantiating, the HTTP server,
wasmtime's runtime) is "host, outside the component's calls". The stages add up to the total.
Generic code that several stages share (serde_json's writer, formatting, copying) has its own
row: its name does not say which stage called it.
"""
import collections
import re
import subprocess
import sys

import cgread

cg, mapf, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

# (stage, pattern on the demangled name); the first match wins.
STAGES = [
    ("allocator", r"PerRequest|meridian::arena|meridian_alloc::|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_|dlmalloc|^dlfree|^dlrealloc|^(malloc|free|realloc|calloc|aligned_alloc)$|cabi_realloc|alloc::raw_vec|RawVec|finish_grow|__rust_no_alloc"),
    ("parse: request JSON, fields, walk", r"meridian::request::|serde_json::de::|SliceRead|MapAccess|SeqAccess|serde_json::value::de|IgnoredAny|indexmap|core::hash::sip|read_json_body|serde_json::read"),
    ("facts: caller, location, privacy", r"meridian::facts|meridian::location|meridian::auth|meridian::headers|meridian::api::locate|meridian::api::request_id|meridian::trace::|meridian::calendar"),
    ("decision", r"meridian::decide|meridian::routes|meridian_policy|meridian::policy|Glob"),
    ("limits", r"meridian::limits|LimitGate|WasiStore"),
    ("personal data", r"meridian::pii"),
    ("upstream request: build", r"meridian::wire::openai::body|meridian::wire::request|meridian::wire::translate|meridian::runtime::Target|meridian::api::inference::build|Outbound"),
    ("answer: read, usage", r"meridian::forward::usage_of|meridian::forward::Loop.*read_all|meridian::sse|meridian::usage"),
    ("audit headers", r"meridian::audit::Record::(each_header|headers)|header_safe|meridian::limits::Audit::header"),
    ("log line", r"meridian::audit::Record::log_line|meridian::audit::facts|LogLine|AttemptLog|mask_keys|spin_adapter::log_line"),
    ("shared: serde_json writer, formatting, copying", r"serde_json::ser|meridian::json::|meridian\.\.json\.\.|serde_core::ser|core::fmt|alloc::fmt|format_inner|memcpy|memmove|memset|memcmp|String.*clone|to_vec|from_utf8|wasmtime_builtin_memory"),
    ("bindings, executor, adapter glue", r"wasi::bindings|wasip3|spin_sdk|spin_executor|wit_bindgen|futures_util|futures_core|meridian::spin_adapter|meridian_p3|meridian::runtime|Pending|WasiBody|Waker|poll"),
    ("request path: serve, dispatch, forward loop", r"meridian::api|meridian::forward|meridian::wire|meridian::transport|meridian::audit"),
]
IMPORT = re.compile(r"^(wasi::bindings::wasi::|wasip3::(wasi|fermyon|spin)::|spin_sdk::wit::(wasi|fermyon)::|.*::wit::wasi::|wasi::.*::(now|get_random|get_stdout|blocking_write))")

def demangle_all(raw):
    out = subprocess.run(["c++filt"], input="\n".join(raw), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(raw, out)) if len(out) == len(raw) else {r: r for r in raw}


def costs(inclusive):
    comp, host = collections.Counter(), 0
    for ir, where, name in cgread.functions(cg, mapf, inclusive):
        if where == "component":
            comp[name] += ir
        else:
            host += ir
    return comp, host


self_c, self_h = costs(False)
incl_c, _ = costs(True)
plain = demangle_all(list(self_c) + [k for k in incl_c if k not in self_c])
stage = collections.Counter()
other = collections.Counter()
def readable(name):
    """Legacy Rust symbols c++filt leaves alone keep their escapes: read them as paths."""
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$RF$", "&"), ("$C$", ","), ("..", "::")):
        name = name.replace(a, b)
    return name


for raw, ir in self_c.items():
    name = readable(plain.get(raw, raw))
    for label, pat in STAGES:
        if re.search(pat, name):
            stage[label] += ir
            break
    else:
        stage["other component code"] += ir
        other[name] += ir
calls = 0
by_call = collections.Counter()
for raw, ir in incl_c.items():
    name = readable(plain.get(raw, raw))
    if IMPORT.search(name) and "closure" not in name:
        calls += max(0, ir - self_c.get(raw, 0))
        by_call[re.sub(r"::h[0-9a-f]{16}$", "", name)] += max(0, ir - self_c.get(raw, 0))
total = cgread.program_total(cg)
listed = sum(self_c.values()) + self_h
if abs(listed - total) * 100 > total:
    print(f"  (the functions' self costs add up to {listed // n:,} a request against callgrind's total "
          f"of {total // n:,}: the host's row below is the total less the rest)")
calls = min(calls, self_h)
stage["host calls (what the host does for the component's calls)"] = calls
stage["host, outside the component's calls (instantiation, HTTP, runtime)"] = max(0, total - sum(self_c.values()) - calls)
print(f"  {'stage':<70} {'instructions':>12} {'share':>6}")
order = [s for s, _ in STAGES] + ["other component code", "host calls (what the host does for the component's calls)", "host, outside the component's calls (instantiation, HTTP, runtime)"]
for label in order:
    ir = stage.get(label, 0)
    print(f"  {label:<70} {ir // n:>12,} {ir * 100 / total:>5.1f}%")
print(f"  {'total':<70} {total // n:>12,}")
print("  the largest of \"other component code\":")
for name, ir in other.most_common(8):
    print(f"    {ir // n:>9,}  {name[:110]}")
print("  the largest host calls (the host's work for each import, per request):")
for name, ir in by_call.most_common(14):
    print(f"    {ir // n:>9,}  {name[:110]}")
