#!/usr/bin/env python3
"""Tables computed from the benchmarks' figures files (bench/results/NAME.tsv).

    report.py targets RESULTS_DIR LINK_BASE   the targets table (bench/targets.def): measured,
                                              met or missed, and the results file and commit
    report.py summary RESULTS_DIR LINK_BASE   retainer beside Kyverno's cleanup controller, the
                                              TTL-after-finished controller and a plain client
    report.py glance RESULTS_DIR LINK_BASE    the short opening table: per question an adopter
                                              asks, retainer, the best peer measured, the ratio
                                              and the target's met or missed
    report.py stale RESULTS_DIR NAME          a note when the code NAME measures changed since
                                              the commit its results were measured at

LINK_BASE is the path from the Markdown file the table goes into to RESULTS_DIR. Nothing here
holds a measured figure: every number comes from a figures file a benchmark wrote, and every
verdict is computed here from it and the target in bench/targets.def.
"""

import fnmatch
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(results, name):
    """(figures, units, meta) of RESULTS/NAME.tsv, or None when the file does not exist."""
    path = os.path.join(results, name + ".tsv")
    if not os.path.exists(path):
        return None
    figures, units, meta = {}, {}, {}
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2:
            continue
        key, value, unit = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        if key.startswith("meta."):
            meta[key[5:]] = value
            continue
        try:
            figures[key] = float(value)
        except ValueError:
            continue
        units[key] = unit
    return figures, units, meta


def fmt(value, unit):
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("bool",):
        return "yes" if value else "no"
    if value == int(value) and abs(value) >= 1:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


# The benchmarks that run the controller on a test bed through bench/driver.rs.
DRIVEN = {"sweep", "memory", "reaction", "reaction-load", "kyverno"}


def measured_paths(name):
    """What a benchmark's figures depend on: the controller (src/, its dependencies) and the
    benchmark's own files (bench/NAME*, the driver for those it runs through)."""
    base = name.removesuffix("-fsync").removesuffix("-ttl")
    paths = ["src", "Cargo.toml", "Cargo.lock", f":(glob)bench/{base}*"]
    if "-" in base:
        paths.append(f":(glob)bench/{base.replace('-', '_')}*")
    if base in DRIVEN:
        paths.append("bench/driver.rs")
    if base in ("eval", "cel", "check"):
        paths.append("bench/celgo")
    return paths


def changed_since(name, meta):
    """The commits since the results' commit that touched what they measure; None when that
    commit is not known here (a prebuilt binary, a commit not in this clone)."""
    commit = meta.get("commit", "")
    if not commit:
        return None
    run = subprocess.run(["git", "-C", ROOT, "log", "--format=%h", f"{commit}..HEAD", "--"]
                         + measured_paths(name), capture_output=True, text=True)
    if run.returncode != 0:
        return None
    return run.stdout.split()


def staleness(name, meta):
    """None when the results are of the code as it is; otherwise why not, in words."""
    commits = changed_since(name, meta)
    if commits is None:
        return "its commit is unknown here"
    if commits:
        return f"{len(commits)} commit{'s' if len(commits) != 1 else ''} since changed what it measures"
    return None


def source(results, name, meta, link_base):
    """The results file a figure came from, its commit, and whether it may be quoted."""
    cell = f"[{name}.md]({link_base}/{name}.md)"
    commit = meta.get("commit", "?")
    cell += f" at `{commit}`"
    notes = []
    if meta.get("quotable") != "yes":
        notes.append("not a result to quote")
    if meta.get("quick") == "1":
        notes.append("quick run")
    stale = staleness(name, meta)
    if stale:
        notes.append("**stale**: " + stale)
    if notes:
        cell += " (" + ", ".join(notes) + ")"
    return cell


def definitions():
    rows = []
    for line in open(os.path.join(ROOT, "bench", "targets.def")):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        parts += [""] * (6 - len(parts))
        ident, desc, measured, cmp, threshold, context = parts[:6]
        name, key = measured.split(":", 1)
        rows.append((ident, desc, name, key, cmp, float(threshold), threshold,
                     [c for c in context.split(",") if c]))
    return rows


def compare(value, cmp, threshold):
    return {"<=": value <= threshold, ">=": value >= threshold, "==": value == threshold}[cmp]


def targets(results, link_base):
    out = ["| target | goal | measured | met | from |", "|---|---|---|---|---|"]
    for ident, desc, name, key, cmp, threshold, threshold_text, context in definitions():
        goal = f"`{name}:{key}` {cmp.replace('<=', '≤').replace('>=', '≥')} {threshold_text}"
        data = load(results, name)
        if data is None:
            out.append(f"| {ident}: {desc} | {goal} | not measured | — | no `{name}` results |")
            continue
        figures, units, meta = data
        keys = sorted(k for k in figures if fnmatch.fnmatchcase(k, key)) if key.endswith("*") \
            else [key] if key in figures else []
        src = source(results, name, meta, link_base)
        if not keys:
            out.append(f"| {ident}: {desc} | {goal} | not measured | — | {src} has no `{key}` |")
            continue
        ctx = ", ".join(f"{c} = {fmt(figures[c], units.get(c, ''))}" for c in context if c in figures)
        for k in keys:
            value = figures[k]
            verdict = "met" if compare(value, cmp, threshold) else "**missed**"
            label = f"{ident} (`{k}`)" if key.endswith("*") else ident
            measured = fmt(value, units.get(k, "")) + (f" ({ctx})" if ctx else "")
            out.append(f"| {label}: {desc} | {goal} | {measured} | {verdict} | {src} |")
    return "\n".join(out)


# The comparison BENCHMARKS.md opens with: (row label, unit note, cells by contender). A cell is
# (results name, key), or a string said as is (why the figure does not apply).
CONTENDERS = ["retainer", "Kyverno cleanup controller", "TTL-after-finished controller",
              "plain client"]


def summary_rows(suffix):
    s, k = "sweep" + suffix, "kyverno" + suffix
    rows = [
        ("Sweep of finished Jobs, each at its defaults, in the run beside the TTL controller "
         "and a plain client (s)",
         [(s, "total_s_retainer_default"), "not in this run", (s, "total_s_ttl"), (s, "total_s_plain")], s),
        ("Sweep of finished Jobs, each at its defaults, in the run beside Kyverno (s)",
         [(k, "total_s_retainer"), (k, "total_s_kyverno"), "not in this run", "not in this run"], k),
        ("Sweep at equal client QPS, 50/s (s)",
         [(s, "total_s_retainer_default"), "not measured", (s, "total_s_ttl_equal"),
          "— (no rate limit)"], s),
        ("Sweep without a client rate limit, 10 in flight (s)",
         [(s, "total_s_retainer"), "—", "—", (s, "total_s_plain")], s),
        ("Trigger to first deletion (s)",
         [(s, "first_s_retainer_default"), (k, "first_s_kyverno"), (s, "first_s_ttl"),
          (s, "first_s_plain")], s),
        ("API requests for the sweep (apiserver_request_total, all clients)",
         [(k, "requests_retainer"), (k, "requests_kyverno"), "not measured", "not measured"], k),
        ("Peak RSS of the controller during the sweep (MiB)",
         [(k, "peak_mib_retainer"), (k, "peak_mib_kyverno"), "not measured", "—"], k),
        ("Policy applied to first deletion (s)",
         ["not measured", (k, "apply_first_s_kyverno"), "— (no policy)", "— (no policy)"], k),
    ]
    if not suffix:
        rows += [
            ("Peak RSS in the memory scenario (MiB)",
             [("memory", "peak_mib"), "not measured", "not measured", "—"], "memory"),
            ("Policy applied to a status a user can read, p99 (ms)",
             [("reaction", "p99_ms_500ms"), "not measured (its status has only lastExecutionTime)",
              "— (no policy)", "— (no policy)"], "reaction"),
        ]
    return rows


def summary(results, link_base):
    out = []
    for suffix, title in (("", "Test bed with fast etcd (no fsync), API priority and fairness off"),
                          ("-fsync", "Test bed with etcd fsync and API priority and fairness on")):
        rows = summary_rows(suffix)
        names = {c[0] for _, cells, _ in rows for c in cells if isinstance(c, tuple)}
        if not any(load(results, n) for n in names) and suffix:
            out += [f"**{title}**: not measured.", ""]
            continue
        out += [f"**{title}**", "", "| | " + " | ".join(CONTENDERS) + " |",
                "|---|" + "---|" * len(CONTENDERS)]
        used = {}
        for label, cells, size_from in rows:
            data = load(results, size_from)
            if data and "n" in data[0]:
                label += f", {int(data[0]['n']):,} Jobs"
            elif data and "jobs" in data[0] and "secrets" in data[0]:
                label += f", {int(data[0]['secrets']):,} Secrets and {int(data[0]['jobs']):,} Jobs"
            rendered = []
            for c in cells:
                if isinstance(c, str):
                    rendered.append(c)
                    continue
                name, key = c
                d = load(results, name)
                if d is None or key not in d[0]:
                    rendered.append("not measured")
                    continue
                used[name] = d[2]
                unit = d[1].get(key, "")
                value = d[0][key]
                text = fmt(value, "" if unit in ("s", "MiB", "ms", "requests") else unit)
                rendered.append(f"[{text}]({link_base}/{name}.md)")
            out.append(f"| {label} | " + " | ".join(rendered) + " |")
        out.append("")
        if used:
            out.append("From: " + "; ".join(source(results, n, m, link_base) for n, m in sorted(used.items()))
                       + ". Each figure is the median over that file's runs; its section below says how many.")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def verdict_of(results, ident):
    """'met', 'missed' or None (not measured) for a target of bench/targets.def; a target over
    several keys is met when every one is, and says how many missed otherwise."""
    values = []
    for row_ident, _desc, name, key, cmp, threshold, _t, _ctx in definitions():
        if row_ident != ident:
            continue
        data = load(results, name)
        if data is None:
            return None
        figures = data[0]
        keys = sorted(k for k in figures if fnmatch.fnmatchcase(k, key)) if key.endswith("*") \
            else [key] if key in figures else []
        values += [compare(figures[k], cmp, threshold) for k in keys]
    if not values:
        return None
    missed = values.count(False)
    if not missed:
        return "met"
    return "**missed**" if len(values) == 1 else f"**missed** ({missed} of {len(values)})"


# The opening table: (question, retainer's figure, the peer and its figure, the ratio, the
# target). A figure is (results name, key, unit shown); None where nothing applies.
GLANCE = [
    ("Sweep of 10,000 finished Jobs, each at its defaults: time (s)",
     ("sweep", "total_s_retainer_default", "s"), "TTL-after-finished controller",
     ("sweep", "total_s_ttl", "s"), ("sweep", "ratio_c_b0", "x faster"), "sweep-ttl-defaults"),
    ("The same sweep beside Kyverno's cleanup controller (s)",
     ("kyverno", "total_s_retainer", "s"), "Kyverno cleanup controller",
     ("kyverno", "total_s_kyverno", "s"), ("kyverno", "ratio_kyverno_retainer", "x faster"),
     "kyverno-sweep"),
    ("Sweep cost over a plain client deleting the same Jobs (s)",
     ("sweep", "total_s_retainer", "s"), "plain client, 10 in flight",
     ("sweep", "total_s_plain", "s"), ("sweep", "ratio_b_a", "x its time"), "sweep-plain"),
    ("`retainer check` on 100,000 Jobs: wall time (s)",
     ("check", "wall_s_retainer_100000", "s"), "cel-go in kube-apiserver's CEL environment",
     ("check", "wall_s_celgo_100000", "s"), ("check", "wall_ratio_100000", "x its time"),
     "check-wall"),
    ("CEL alone over the four example policies",
     None, "cel-go, kube-apiserver's environment", None,
     ("eval", "cel_total_ratio", "x its speed"), "cel-total"),
    ("Controller peak memory, 20,000 Secrets + 20,000 Jobs, 10 policies (MiB)",
     ("memory", "peak_mib", "MiB"), None, None, None, "memory-peak"),
    ("One object changed among 100,000: p99 to its verdict (ms), worst policy",
     ("incremental", "incr_p99_ms_100000_*", "ms"), None, None, None, "incremental"),
    ("`kubectl apply` to a status a user can read, p99 (ms)",
     ("reaction", "p99_ms_500ms", "ms"), None, None, None, "reaction"),
    ("OCI first sweep over a plain DELETE client",
     ("oci", "first_s", "s"), "plain DELETE client", ("oci", "plain_s", "s"),
     ("oci", "ratio_first_plain", "x its time"), "oci-first"),
]


def glance_value(results, fig, link_base):
    """A figure as a cell linking its section; the largest when the key is a pattern."""
    if fig is None:
        return "—"
    name, key, unit = fig
    data = load(results, name)
    if data is None:
        return "not measured"
    figures = data[0]
    keys = [k for k in figures if fnmatch.fnmatchcase(k, key)]
    if not keys:
        return "not measured"
    value = max(figures[k] for k in keys)
    text = f"{value:.2f}{unit}" if unit.startswith("x") else fmt(value, unit)
    stale = " (stale)" if staleness(name, data[2]) else ""
    return f"[{text}]({link_base}/{name}.md){stale}"


def glance(results, link_base):
    out = ["| question | retainer | peer | peer's figure | ratio | target |",
           "|---|---|---|---|---|---|"]
    for question, mine, peer_name, peer, ratio, ident in GLANCE:
        verdict = verdict_of(results, ident) or "not measured"
        out.append(f"| {question} | {glance_value(results, mine, link_base)} | "
                   f"{peer_name or '—'} | {glance_value(results, peer, link_base)} | "
                   f"{glance_value(results, ratio, link_base)} | {verdict} |")
    return "\n".join(out)


def shell_word(p):
    return f"'{p}'" if any(c in p for c in "()*") else p


def stale_note(results, name):
    """The line a results section carries when the code it measured has changed since."""
    data = load(results, name)
    if data is None:
        return ""
    why = staleness(name, data[2])
    if not why:
        return ""
    commit = data[2].get("commit", "?")
    return (f"> **Stale**: measured at `{commit}`; {why} "
            f"(`git log {commit}..HEAD -- {' '.join(shell_word(p) for p in measured_paths(name))}`). "
            "Its figures are those of the older code until it is run again.\n")


if __name__ == "__main__":
    what, results, arg = sys.argv[1:4]
    if what == "stale":
        print(stale_note(results, arg), end="")
    elif what == "targets":
        print(targets(results, arg))
    elif what == "glance":
        print(glance(results, arg))
    else:
        print(summary(results, arg))
