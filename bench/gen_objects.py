#!/usr/bin/env python3
"""Deterministic objects for the evaluation benchmark (bench/eval.sh).

    bench/gen_objects.py --n 100000 --out bench/data [--format json|yaml]

writes jobs-<n>.<ext> (n Jobs and the Namespaces they live in) and secrets-<n>.<ext>
(n Secrets and the Pods that reference some of them), as one `kind: List` each, the shape
`retainer check --objects` and `kubectl get -o json` share.

The data is shaped to the example policies so that each governs a large share of it:
  - fleet-gitjobs (fleet-local, label gitjob.fleet.cattle.io/name): 60% of the Jobs, 400
    GitRepos, about 150 Jobs each; 88% succeeded, 7% failed, 5% still running.
  - finished-jobs (cluster-wide except kube-system): 95% of the Jobs; creation times spread
    over 20 days, so about 5% are younger than the policy's 24h.
  - helm-history (apps, type helm.sh/release.v1, owner=helm): 60% of the Secrets, releases of
    5 to 240 revisions, the newest deployed.
  - unused-secrets (team-a, retainer.dev/cleanup=true): 20% of the Secrets, about a fifth of
    them mounted or read by a Pod, ages spread over 30 days.
The rest is what clusters also hold: CronJob Jobs in other namespaces, helm releases elsewhere,
service-account tokens, TLS and pull secrets.

No randomness: every choice is a hash of the object's index, so the same n gives the same
bytes on every machine and Python version.
"""

import argparse
import io
import json
import os
import re
import sys
import time

NOW = 1795348800  # 2026-11-22T12:00:00Z, the benchmark's --now
DAY = 86400


def mix64(i, salt):
    """A well-spread 64-bit hash of (i, salt) (splitmix64's finaliser)."""
    z = (i * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def mix(i, salt):
    """The hash as a float in [0, 1)."""
    return (mix64(i, salt) >> 11) / 2.0**53


def hexid(i, salt, n=8):
    h = "".join("%016x" % mix64(i, salt * 64 + k) for k in range((n + 15) // 16))
    return h[:n]


def uid(i, salt):
    h = hexid(i, salt, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def ts(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# ---------------------------------------------------------------------------------------------
# Jobs

JOB_NAMESPACES = ["fleet-local", "fleet-default", "ci", "team-a", "team-b", "kube-system"]


def job(i):
    slot = i % 20
    created = NOW - int(mix(i, 1) * 20 * DAY) - 60
    u = mix(i, 2)
    state = "succeeded" if u < 0.88 else "failed" if u < 0.95 else "running"
    labels = {}
    annotations = {}
    owner = None
    if slot < 14:
        ns = "fleet-local" if slot < 12 else "fleet-default"
        repo = f"repo-{int(mix(i, 3) * 400)}"
        name = f"{repo}-{hexid(i, 4, 5)}{i:x}"
        labels = {
            "gitjob.fleet.cattle.io/name": repo,
            "fleet.cattle.io/commit": hexid(i, 5, 40),
            "app.kubernetes.io/managed-by": "fleet",
        }
        annotations = {"objectset.rio.cattle.io/id": "gitjob", "fleet.cattle.io/gitjob-generation": str(1 + i % 7)}
        image = "rancher/fleet:v0.12.4"
        args = ["fleet", "apply", "--targets-file=/run/config/targets.yaml", f"--label=fleet.cattle.io/repo-name={repo}"]
        sa = f"git-{repo}"
    elif slot < 17:
        ns = "ci"
        cron = f"nightly-{int(mix(i, 3) * 40)}"
        name = f"{cron}-{29000000 + i}"
        labels = {"batch.kubernetes.io/job-name": name, "job-name": name, "app": cron}
        owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": cron, "uid": uid(int(mix(i, 3) * 40), 6),
                 "controller": True, "blockOwnerDeletion": True}
        image = "registry.example.com/ci/runner:2.14.1"
        args = ["run", "--suite", cron]
        sa = "ci-runner"
    elif slot < 19:
        ns = "team-a" if slot == 17 else "team-b"
        name = f"migrate-{i:06d}"
        labels = {"batch.kubernetes.io/job-name": name, "job-name": name, "app.kubernetes.io/component": "migration"}
        image = f"registry.example.com/{ns}/migrate:1.{i % 30}.0"
        args = ["migrate", "up"]
        sa = "default"
    else:
        ns = "kube-system"
        name = f"helm-install-addon-{i:06d}"
        labels = {"batch.kubernetes.io/job-name": name, "job-name": name, "helmcharts.helm.cattle.io/chart": "addon"}
        image = "rancher/klipper-helm:v0.9.3"
        args = ["install"]
        sa = "helm-addon"
    if int(mix(i, 7) * 500) == 0:
        labels["retainer.dev/keep"] = "true"
    controller_uid = uid(i, 8)
    labels["batch.kubernetes.io/controller-uid"] = controller_uid
    labels["controller-uid"] = controller_uid
    meta = {
        "name": name,
        "namespace": ns,
        "uid": controller_uid,
        "resourceVersion": str(1000000 + i * 3),
        "generation": 1,
        "creationTimestamp": ts(created),
        "labels": labels,
        "annotations": annotations,
    }
    if owner:
        meta["ownerReferences"] = [owner]
    tmpl_labels = {"batch.kubernetes.io/controller-uid": controller_uid, "batch.kubernetes.io/job-name": name,
                   "controller-uid": controller_uid, "job-name": name}
    spec = {
        "backoffLimit": 6 if slot < 14 else 2,
        "completionMode": "NonIndexed",
        "completions": 1,
        "parallelism": 1,
        "manualSelector": False,
        "podReplacementPolicy": "TerminatingOrFailed",
        "suspend": False,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": controller_uid}},
        "template": {
            "metadata": {"labels": tmpl_labels},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": sa,
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                "containers": [{
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": args,
                    "env": [{"name": "HOME", "value": "/tmp"}, {"name": "NAMESPACE", "value": ns},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
                    "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                    "volumeMounts": [{"name": "config", "mountPath": "/run/config", "readOnly": True}],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }],
                "volumes": [{"name": "config", "configMap": {"name": f"{name}-config", "defaultMode": 420}}],
            },
        },
    }
    start = created + 2
    if state == "running":
        status = {"active": 1, "ready": 0, "startTime": ts(start), "terminating": 0,
                  "uncountedTerminatedPods": {}}
    else:
        done = start + 20 + int(mix(i, 9) * 600)
        ok = state == "succeeded"
        cond = [{"type": "SuccessCriteriaMet" if ok else "FailureTarget", "status": "True",
                 "lastProbeTime": ts(done), "lastTransitionTime": ts(done),
                 **({} if ok else {"reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"})},
                {"type": "Complete" if ok else "Failed", "status": "True",
                 "lastProbeTime": ts(done), "lastTransitionTime": ts(done),
                 **({} if ok else {"reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"})}]
        status = {"startTime": ts(start), "conditions": cond, "ready": 0, "terminating": 0,
                  "uncountedTerminatedPods": {}}
        if ok:
            status["succeeded"] = 1
            status["completionTime"] = ts(done)
        else:
            status["failed"] = spec["backoffLimit"] + 1
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec, "status": status}


def namespace(name):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": uid(hash_name(name), 10), "resourceVersion": "1",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def hash_name(s):
    return sum((k + 1) * ord(c) for k, c in enumerate(s))


def jobs(n):
    items = [namespace(ns) for ns in JOB_NAMESPACES]
    items.extend(job(i) for i in range(n))
    return items


# ---------------------------------------------------------------------------------------------
# Secrets

def blob(i, salt, length):
    """Base64-looking filler; Secret data is dropped on reading, but it is parsed first."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    seed = hexid(i, salt, 16)
    return "".join(alphabet[(int(seed[k % 16], 16) * 7 + k * 13) % 64] for k in range(length))


def helm_releases(count, prefix, salt):
    """(release, revision, revisions) triples, `count` of them, releases of 5..240 revisions."""
    out = []
    r = 0
    while len(out) < count:
        size = 5 + int(mix(r, salt) * 236)
        for rev in range(1, size + 1):
            out.append((f"{prefix}{r}", rev, size))
        r += 1
    return out[:count]


def helm_secret(i, ns, release, rev, size):
    # Revisions a day apart, the newest a few hours old.
    created = NOW - (size - rev) * DAY - 3 * 3600 - int(mix(i, 11) * 3600)
    latest = rev == size
    status = "deployed" if latest else ("failed" if mix(i, 12) < 0.02 else "superseded")
    return {"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": f"sh.helm.release.v1.{release}.v{rev}", "namespace": ns, "uid": uid(i, 13),
                         "resourceVersion": str(2000000 + i * 3), "creationTimestamp": ts(created),
                         "labels": {"owner": "helm", "name": release, "version": str(rev), "status": status,
                                    "modifiedAt": str(created)}},
            "data": {"release": blob(i, 14, 1024)}}


def cleanup_secret(i, k):
    created = NOW - int(mix(i, 15) * 30 * DAY) - 60
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"cleanup-{k:06d}", "namespace": "team-a", "uid": uid(i, 16),
                         "resourceVersion": str(2000000 + i * 3), "creationTimestamp": ts(created),
                         "labels": {"retainer.dev/cleanup": "true", "app": f"svc-{k % 50}"},
                         "annotations": {"team.example.com/owner": "team-a"}},
            "data": {"password": blob(i, 17, 24), "username": "YWRtaW4="}}


def other_secret(i, k):
    created = NOW - int(mix(i, 18) * 200 * DAY) - 60
    ns = ["team-a", "team-b", "ci", "default", "kube-system", "monitoring"][k % 6]
    kind = k % 4
    meta = {"name": "", "namespace": ns, "uid": uid(i, 19), "resourceVersion": str(2000000 + i * 3),
            "creationTimestamp": ts(created)}
    if kind == 0:
        sa = f"sa-{k}"
        meta["name"] = f"{sa}-token"
        meta["annotations"] = {"kubernetes.io/service-account.name": sa,
                               "kubernetes.io/service-account.uid": uid(k, 20)}
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": meta, "data": {"ca.crt": blob(i, 21, 512), "namespace": "ZGVmYXVsdA==",
                                           "token": blob(i, 22, 256)}}
    if kind == 1:
        meta["name"] = f"tls-{k}"
        meta["labels"] = {"controller.cert-manager.io/fao": "true"}
        meta["annotations"] = {"cert-manager.io/certificate-name": f"cert-{k}", "cert-manager.io/issuer-name": "letsencrypt"}
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": meta,
                "data": {"tls.crt": blob(i, 23, 768), "tls.key": blob(i, 24, 384)}}
    if kind == 2:
        meta["name"] = f"regcred-{k}"
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson", "metadata": meta,
                "data": {".dockerconfigjson": blob(i, 25, 160)}}
    meta["name"] = f"config-{k}"
    meta["labels"] = {"app": f"svc-{k % 50}"}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "data": {"config.yaml": blob(i, 26, 200)}}


def pod(p, cleanup_count):
    """A team-a Pod that mounts one clean-up Secret and reads another through env."""
    a = (p * 10) % max(cleanup_count, 1)
    b = (p * 10 + 3) % max(cleanup_count, 1)
    name = f"api-{p:05d}-{hexid(p, 27, 5)}"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team-a", "uid": uid(p, 28), "resourceVersion": "1",
                         "creationTimestamp": ts(NOW - 3600), "labels": {"app": f"svc-{p % 50}"}},
            "spec": {"containers": [{"name": "api", "image": "registry.example.com/team-a/api:1.4.2",
                                     "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
                                         "name": f"cleanup-{b:06d}", "key": "password"}}}]}],
                     "volumes": [{"name": "creds", "secret": {"secretName": f"cleanup-{a:06d}"}}]},
            "status": {"phase": "Running"}}


def secrets(n):
    slots = [i % 20 for i in range(n)]
    helm_apps = helm_releases(sum(1 for s in slots if s < 12), "rel-", 30)
    helm_other = helm_releases(sum(1 for s in slots if s == 12), "other-", 31)
    items = []
    counters = {"apps": 0, "other": 0, "cleanup": 0, "misc": 0}
    for i, s in enumerate(slots):
        if s < 12:
            rel, rev, size = helm_apps[counters["apps"]]
            counters["apps"] += 1
            items.append(helm_secret(i, "apps", rel, rev, size))
        elif s == 12:
            rel, rev, size = helm_other[counters["other"]]
            counters["other"] += 1
            items.append(helm_secret(i, "team-b", rel, rev, size))
        elif s < 17:
            items.append(cleanup_secret(i, counters["cleanup"]))
            counters["cleanup"] += 1
        else:
            items.append(other_secret(i, counters["misc"]))
            counters["misc"] += 1
    # One Pod per 10 clean-up Secrets, each referencing two of them: a fifth is in use.
    items.extend(pod(p, counters["cleanup"]) for p in range(counters["cleanup"] // 10))
    return items


# ---------------------------------------------------------------------------------------------

PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


PLAIN_VALUE = re.compile(r"^[A-Za-z][A-Za-z0-9 ._/-]*[A-Za-z0-9._/-]$|^[A-Za-z]$")
RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if PLAIN_VALUE.match(v) and v.lower() not in RESERVED:
        return v
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(v)


def emit_yaml(f, v, indent):
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            f.write(pad + "{}\n")
        for k, x in v.items():
            key = k if PLAIN_KEY.match(k) else json.dumps(k)
            if isinstance(x, (dict, list)) and x:
                f.write(f"{pad}{key}:\n")
                emit_yaml(f, x, indent + 2 if isinstance(x, dict) else indent)
            else:
                f.write(f"{pad}{key}: {yaml_scalar(x) if not isinstance(x, (dict, list)) else ('{}' if isinstance(x, dict) else '[]')}\n")
    else:
        for x in v:
            if isinstance(x, dict) and x:
                # The first key goes on the dash line; the rest align under it.
                buf = io.StringIO()
                emit_yaml(buf, x, indent + 2)
                text = buf.getvalue()
                f.write(pad + "- " + text[indent + 2:])
            elif isinstance(x, list) and x:
                f.write(pad + "-\n")
                emit_yaml(f, x, indent + 2)
            else:
                f.write(pad + "- " + (yaml_scalar(x) if not isinstance(x, (dict, list)) else ("{}" if isinstance(x, dict) else "[]")) + "\n")


def write(path, items, fmt):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        if fmt == "json":
            # One item per line: readable with head/grep, and still one JSON document.
            f.write('{"apiVersion": "v1", "kind": "List", "items": [\n')
            for k, it in enumerate(items):
                f.write(json.dumps(it, separators=(",", ":"), sort_keys=False))
                f.write(",\n" if k + 1 < len(items) else "\n")
            f.write("]}\n")
        else:
            # Multi-document block YAML, as `kubectl get -o yaml` would print each object.
            for it in items:
                f.write("---\n")
                emit_yaml(f, it, 0)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000, help="Jobs and Secrets, each (default 100000)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--format", choices=["json", "yaml"], default="json")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    ext = a.format
    for kind, make in (("jobs", jobs), ("secrets", secrets)):
        path = os.path.join(a.out, f"{kind}-{a.n}.{ext}")
        write(path, make(a.n), a.format)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
