#!/usr/bin/env python3
"""Consistency checks of deploy/ used by the test suite (tests/tests/deploy.rs):

  check.py metrics    print every metric name the alert rules and the dashboard query
  check.py sync       exit 1 unless kubernetes/prometheusrule.yaml carries exactly the groups
                      of alerts/fsobserver-rules.yml
  check.py --write    regenerate kubernetes/prometheusrule.yaml from the rules file
  check.py runbook    exit 1 unless every alert has a RUNBOOK.md section its runbook_url names
  check.py scrape     print, as JSON, how the ServiceMonitor scrapes the observer (job, path,
                      interval)
  check.py container VARIANT
                      print, as JSON, what the DaemonSet VARIANT (least-privilege, privileged)
                      asks of a container runtime for the observer: image, args, env,
                      capabilities, security settings, every mount with its volume, and the
                      ConfigMap's observer.toml (the container tests run it from this)
"""
import json
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
RULES = HERE / "alerts" / "fsobserver-rules.yml"
CR = HERE / "kubernetes" / "prometheusrule.yaml"
DASHBOARD = HERE / "grafana" / "fsobserver-dashboard.json"
RUNBOOK = HERE / "RUNBOOK.md"
HEADER = "# Generated from deploy/alerts/fsobserver-rules.yml by deploy/check.py --write; edit that file.\n"
# PromQL words that look like metric names but are not.
NOT_METRICS = {"sum", "by", "rate", "increase", "min", "max", "avg", "topk", "on", "without",
               "humanize", "humanizeDuration", "histogram_quantile", "sort_desc", "count"}


def groups():
    return yaml.safe_load(RULES.read_text())["groups"]


def cr_text():
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fsobserver", "namespace": "fsobserver",
                     "labels": {"app.kubernetes.io/name": "fsobserver"}},
        "spec": {"groups": groups()},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=200)


def exprs():
    for g in groups():
        for r in g["rules"]:
            yield r["expr"]
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            yield t["expr"]
    for var in dash.get("templating", {}).get("list", []):
        m = re.match(r"label_values\((\w+)", str(var.get("query", "")))
        if m:
            yield m.group(1)


def metric_names():
    names = set()
    for e in exprs():
        e = re.sub(r'"[^"]*"', '""', e)        # label values
        e = re.sub(r"\{[^}]*\}", "", e)        # label matchers
        e = re.sub(r"\[[^\]]*\]", "", e)       # ranges
        e = re.sub(r"\b(by|without|on)\s*\([^)]*\)", "", e)  # grouping labels
        for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
            if w not in NOT_METRICS:
                names.add(w)
    return sorted(names)


def scrape():
    sm = yaml.safe_load((HERE / "kubernetes" / "servicemonitor.yaml").read_text())
    svc = yaml.safe_load((HERE / "kubernetes" / "service.yaml").read_text())
    (ep,) = sm["spec"]["endpoints"]
    # The Operator names the job after the Service (no jobLabel set).
    return {"job": svc["metadata"]["name"], "path": ep["path"], "interval": ep["interval"]}


def container(variant):
    ds = yaml.safe_load((HERE / "kubernetes" / f"daemonset-{variant}.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = []
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        kind = next(k for k in ("hostPath", "emptyDir", "configMap") if k in v)
        mounts.append({
            "path": m["mountPath"],
            "kind": kind,
            "host": v[kind]["path"] if kind == "hostPath" else None,
            "host_type": v[kind].get("type", "") if kind == "hostPath" else "",
            "read_only": bool(m.get("readOnly", False)),
            "propagation": m.get("mountPropagation", ""),
            "medium": v[kind].get("medium", "") if kind == "emptyDir" else "",
            "size_limit": v[kind].get("sizeLimit", "") if kind == "emptyDir" else "",
        })
    cm = yaml.safe_load((HERE / "kubernetes" / "configmap.yaml").read_text())
    return {
        "image": c["image"],
        "args": c.get("args", []),
        "env": [[e["name"], e["value"]] for e in c.get("env", []) if "value" in e],
        "env_from_node": [e["name"] for e in c.get("env", []) if "valueFrom" in e],
        "host_pid": bool(pod.get("hostPID", False)),
        "privileged": bool(sc.get("privileged", False)),
        "run_as_user": sc.get("runAsUser"),
        "read_only_root": bool(sc.get("readOnlyRootFilesystem", False)),
        "no_new_privileges": sc.get("allowPrivilegeEscalation") is False,
        "seccomp": sc.get("seccompProfile", {}).get("type", ""),
        "cap_drop": caps.get("drop", []),
        "cap_add": caps.get("add", []),
        "memory_limit": c.get("resources", {}).get("limits", {}).get("memory", ""),
        "mounts": mounts,
        "config": cm["data"]["observer.toml"],
    }


def main(cmd):
    if cmd == "metrics":
        print("\n".join(metric_names()))
    elif cmd == "--write":
        CR.write_text(cr_text())
    elif cmd == "sync":
        if CR.read_text() != cr_text():
            sys.exit("kubernetes/prometheusrule.yaml is out of date: run deploy/check.py --write")
    elif cmd == "runbook":
        text = RUNBOOK.read_text()
        anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
                   for h in re.findall(r"^#+ (.*)$", text, re.M)}
        missing = [r["alert"] for g in groups() for r in g["rules"]
                   if r["annotations"]["runbook_url"].split("#")[1] not in anchors]
        if missing:
            sys.exit(f"RUNBOOK.md has no section for: {', '.join(missing)}")
    elif cmd == "scrape":
        print(json.dumps(scrape()))
    elif cmd == "container" and len(sys.argv) == 3:
        print(json.dumps(container(sys.argv[2]), indent=1))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
