"""The operator bundle under deploy/: rules, dashboard, manifests, units.

Static checks use the real tools where they exist offline (promtool from
Debian's prometheus package); Kubernetes manifests, the systemd unit, the
Dockerfile and compose.yaml get structural checks only (no kubeconform or
kubeval wheel exists on PyPI, and no container engine runs here).

The live part starts a real ``prometheus`` on loopback, scraping a real
``driftmon run`` (a subprocess consuming synthetic recommender traffic with a
drift episode from the session's embedded tansu broker, alerting a local
webhook receiver; see tests/e2e/deploy_target.py), loading
deploy/prometheus/driftmon-rules.yml, and asks it every dashboard and rule
expression.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from driftmon.config import load_config, parse_config
from driftmon.outputs.metrics import METRIC_NAMES, SCALE_METRIC_NAMES
from tests.conftest import unique_name
from tests.e2e.deploy_target import RECEIVER, DriftmonTarget

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
RULES = PROM_DIR / "driftmon-rules.yml"
RULES_TEST = PROM_DIR / "driftmon-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "driftmon.json"
K8S = DEPLOY / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"

CONFIG_PATH = "/etc/driftmon/driftmon.yaml"
RUN_ARGV = ["driftmon", "run", "-c", CONFIG_PATH]


def promtool(*args: str, cwd: Path) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's prometheus package"
    p = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"promtool {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def recording_rules() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "record" in r]


def alerting_rules() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    return load_dashboard()["panels"]


# --------------------------------------------------------------------- PromQL helpers

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_LEXEME = re.compile(
    r"(?P<dur>(?:\d+(?:ms|[smhdwy]))+)"
    r"|(?P<num>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?"
)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords).

    Strings, label matchers, ranges and grouping clauses are removed first;
    an identifier followed by ``(`` is a function or aggregation.
    """
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _GROUPING.sub(" ", s)
    names = set()
    for m in _LEXEME.finditer(s):
        ident = m.group("ident")
        if ident and not m.group("call") and ident.lower() not in _KEYWORDS:
            names.add(ident)
    return names


_CMP = re.compile(r"==|!=|>=|<=|>|<")


def strip_comparisons(expr: str) -> str:
    """Turn every filtering comparison into a ``bool`` one.

    ``x > 0.05`` keeps only the series over the threshold; ``x > bool 0.05``
    keeps every series (value 0 or 1).  So an alert expression that is
    (rightly) not firing still proves that all its selectors, joins and
    recorded series exist.  Label matchers (inside braces) are left alone.
    """
    out: list[str] = []
    i, depth, quote = 0, 0, None
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\":
                out.append(expr[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in "\"'`":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0 and (m := _CMP.match(expr, i)):
            op = m.group()
            out.append(op)
            i += len(op)
            if not re.match(r"\s*bool\b", expr[i:]):
                out.append(" bool")
            continue
        out.append(ch)
        i += 1
    return "".join(out)


GRAFANA_VARS = {"stream": ".*", "feature": ".*", "segment": ".*",
                "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def substitute_grafana_vars(expr: str) -> str:
    """$stream / ${feature} / $__rate_interval ... -> values Prometheus accepts."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARS, f"unknown dashboard variable ${name} in {expr!r}"
        return GRAFANA_VARS[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def dashboard_exprs() -> list[str]:
    """Every panel target's expr, with template variables substituted."""
    return [substitute_grafana_vars(t["expr"]) for p in dashboard_panels() for t in p["targets"]]


def variable_queries() -> dict[str, tuple[str, str]]:
    """Template variable -> (series selector, label) from its label_values() query."""
    out = {}
    for v in load_dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", q)
        assert m, f"variable {v['name']}: expected label_values(selector, label), got {q!r}"
        out[v["name"]] = (substitute_grafana_vars(m.group(1)), m.group(2))
    return out


def live_queries() -> dict[str, bool]:
    """Expression -> must it return at least one series against a live driftmon?

    Dashboard and recording expressions must return data as they are.  An
    alerting expression is evaluated as is (it must parse and evaluate, but
    may rightly be empty when nothing is wrong) and with its comparisons made
    ``bool`` (see strip_comparisons), which must return data.
    """
    q: dict[str, bool] = {}
    for e in dashboard_exprs():
        q[e] = True
    for r in recording_rules():
        q[r["expr"]] = True
    for r in alerting_rules():
        q.setdefault(r["expr"], False)
        q[strip_comparisons(r["expr"])] = True
    return q


def prom_get(prometheus_url: str, path: str, **params) -> dict:
    url = f"{prometheus_url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:  # 400/422: bad PromQL, with Prometheus' error text
        body = json.load(e)
    if body.get("status") != "success":
        raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def evaluate_all_queries(prometheus_url: str) -> dict[str, list]:
    """Ask Prometheus every dashboard and rule expression (see live_queries).

    Returns {expr: result series}; raises AssertionError naming the
    expression if Prometheus cannot parse or evaluate it.
    """
    out = {}
    for expr in live_queries():
        data = prom_get(prometheus_url, "/api/v1/query", query=expr)
        out[expr] = data["result"]
    return out


# --------------------------------------------------------------------- promtool

def test_promtool_check_rules():
    out = promtool("check", "rules", RULES.name, cwd=PROM_DIR)
    assert f"SUCCESS: {len(recording_rules()) + len(alerting_rules())} rules found" in out


def test_promtool_unit_tests_pass():
    promtool("test", "rules", RULES_TEST.name, cwd=PROM_DIR)


def test_promtool_check_example_config():
    out = promtool("check", "config", "prometheus.yml", cwd=PROM_DIR)
    assert "1 rule files found" in out
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    targets = [t for sc in cfg["scrape_configs"] for st in sc["static_configs"] for t in st["targets"]]
    assert "127.0.0.1:9108" in targets


def test_promtool_check_compose_config(tmp_path):
    # compose mounts the rules beside the config, so mirror that layout
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / RULES.name)
    out = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "1 rule files found" in out


def test_every_alert_has_firing_and_quiet_unit_tests():
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    fires, quiet = set(), set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert names >= {"DriftCritical", "DriftWarning", "DriftmonNoWindowsClosed", "DriftmonRejectRatioHigh",
                     "DriftmonConsumerLagGrowing", "DriftmonWebhookFailures"}
    assert names - fires == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a does-not-fire test"


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_alerts_have_annotations_and_runbooks_that_exist():
    anchors = github_anchors(OPERATIONS.read_text())
    for r in alerting_rules():
        ann = r["annotations"]
        assert ann.get("summary") and ann.get("description"), r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        path, _, anchor = ann["runbook_url"].partition("#")
        assert path == "docs/operations.md", r["alert"]
        assert anchor == r["alert"].lower(), r["alert"]
        assert anchor in anchors, f"{r['alert']}: no heading for #{anchor} in docs/operations.md"


# --------------------------------------------------------------------- metric names

def test_promql_metric_name_extraction():
    expr = ('sum by (stream, reason) (rate(foo_total{reason=~"a|b", x!="c"}[5m] offset 1h)) '
            '/ on(stream) group_left(reason) bar:ratio:rate5m > bool 3e-2 and time() - baz < 1 '
            'or vector(0) unless quantile_over_time(0.5, qux[1d:1m])')
    assert promql_metric_names(expr) == {"foo_total", "bar:ratio:rate5m", "baz", "qux"}
    assert promql_metric_names("topk(10, driftmon_divergence)") == {"driftmon_divergence"}


def test_strip_comparisons():
    assert strip_comparisons('a{x!="1",y=~"z"} > 0.5') == 'a{x!="1",y=~"z"} > bool 0.5'
    assert strip_comparisons("a >= bool 1 and b == 2") == "a >= bool 1 and b == bool 2"
    assert strip_comparisons("(time() - a) > 3 * (b or c)") == "(time() - a) > bool 3 * (b or c)"
    assert strip_comparisons('x{a="<>"}') == 'x{a="<>"}'


def test_dashboard_and_rules_use_only_known_metric_names():
    # the scale-out series may be used too; the dashboard must show the base contract (below)
    known = set(METRIC_NAMES) | set(SCALE_METRIC_NAMES) | {r["record"] for r in recording_rules()}
    used: dict[str, set[str]] = {}
    exprs = dashboard_exprs() + [r["expr"] for r in recording_rules() + alerting_rules()]
    exprs += [sel for sel, _ in variable_queries().values()]
    for e in exprs:
        for name in promql_metric_names(e):
            used.setdefault(name, set()).add(e)
    unknown = {n: sorted(es) for n, es in used.items() if n not in known}
    assert not unknown, f"metric names not in driftmon.outputs.metrics.METRIC_NAMES/SCALE_METRIC_NAMES: {unknown}"
    # and the dashboard shows every metric of the contract
    shown = set().union(*(promql_metric_names(e) for e in dashboard_exprs()))
    assert set(METRIC_NAMES) - shown == set(), "metrics missing from the dashboard"


def test_recording_rule_names_follow_convention():
    for r in recording_rules():
        assert re.fullmatch(r"driftmon:[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]


# --------------------------------------------------------------------- dashboard

def test_dashboard_schema():
    d = load_dashboard()
    assert d["schemaVersion"] >= 36
    assert d["title"] and d["uid"]
    inputs = {i["name"]: i for i in d["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("stream", "feature", "segment"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert v["multi"] and v["includeAll"] and v["allValue"] == ".*"
    assert set(variable_queries()) == {"stream", "feature", "segment"}

    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']} exceeds 24 columns"
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        refids = [t["refId"] for t in p["targets"]]
        assert len(refids) == len(set(refids)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t.get("datasource", p["datasource"])["uid"] == "${DS_PROMETHEUS}", p["title"]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
            assert not overlap, f"panels {a[0]!r} and {b[0]!r} overlap"


def test_dashboard_has_the_required_views():
    by_type: dict[str, list[str]] = {}
    for p in dashboard_panels():
        by_type.setdefault(p["type"], []).extend(t["expr"] for t in p["targets"])
    every = [e for es in by_type.values() for e in es]
    assert any("driftmon_alert_state" in e for e in by_type["state-timeline"])
    assert any("topk(" in e and "driftmon_divergence" in e for e in by_type["table"])
    ts = by_type["timeseries"]
    assert any("driftmon_divergence" in e for e in ts) and any("driftmon_threshold" in e for e in ts)
    assert any("driftmon_p_value" in e for e in ts)
    assert any("rate(driftmon_events_total" in e for e in ts)
    assert any("driftmon_events_rejected_total" in e and "reason" in e for e in ts)
    assert any("time() - driftmon_last_window_close_timestamp_seconds" in e for e in every)
    assert any("driftmon_webhook_deliveries_total" in e and "outcome" in e for e in ts)
    assert any("driftmon_consumer_lag" in e for e in ts)


# --------------------------------------------------------------------- kubernetes

def k8s_docs() -> dict[str, dict]:
    """{kind: manifest} from every resource the kustomization lists."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for f in kust["resources"]:
        for doc in yaml.safe_load_all((K8S / f).read_text()):
            out[doc["kind"]] = doc
    return out


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kust["resources"]) == sorted(on_disk)


def test_k8s_manifests_structure():
    docs = k8s_docs()
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "ServiceMonitor"}
    api = {"ConfigMap": "v1", "Deployment": "apps/v1", "Service": "v1",
           "ServiceMonitor": "monitoring.coreos.com/v1"}
    for kind, doc in docs.items():
        assert doc["apiVersion"] == api[kind], kind
        assert doc["metadata"]["name"], kind

    dep, cm, svc, sm = docs["Deployment"], docs["ConfigMap"], docs["Service"], docs["ServiceMonitor"]
    spec = dep["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    assert c["command"] == RUN_ARGV
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names["metrics"] == 9108
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in port_names
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in c["env"]}
    ref = env["DRIFTMON_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert "value" not in env["DRIFTMON_WEBHOOK_SECRET"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    cfg_mount = mounts[str(Path(CONFIG_PATH).parent)]
    assert cfg_mount["readOnly"] is True
    assert volumes[cfg_mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert Path(CONFIG_PATH).name in cm["data"]

    # the config in the ConfigMap is valid for driftmon and matches the pod
    cfg = parse_config(yaml.safe_load(cm["data"][Path(CONFIG_PATH).name]),
                       {"DRIFTMON_WEBHOOK_SECRET": "test-secret"})
    assert cfg.http.host == "0.0.0.0" and cfg.http.port == port_names["metrics"]
    state_mount = mounts[cfg.state.dir]
    assert "emptyDir" in volumes[state_mount["name"]] or "persistentVolumeClaim" in volumes[state_mount["name"]]
    assert not state_mount.get("readOnly")
    assert "/tmp" in mounts  # writable scratch despite the read-only root
    assert all(h.secret == "test-secret" for h in cfg.alerts.webhooks)

    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (sport,) = svc["spec"]["ports"]
    assert sport["targetPort"] in port_names and sport["port"] == 9108
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == sport["name"] and ep["path"] == "/metrics"


# --------------------------------------------------------------------- systemd, Docker, compose

def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    cur = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert cur is not None, f"key outside a section: {line}"
        cur.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened():
    unit = unit_file(DEPLOY / "systemd" / "driftmon.service")
    svc = unit["Service"]

    def one(key: str) -> str:
        assert len(svc.get(key, [])) == 1, key
        return svc[key][0]

    assert one("ExecStart") == "/usr/local/bin/" + " ".join(RUN_ARGV)
    assert one("DynamicUser") == "yes"
    assert one("StateDirectory") == "driftmon"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") in ("yes", "true", "read-only", "tmpfs")
    assert one("NoNewPrivileges") == "yes"
    assert one("Restart") == "on-failure"
    assert one("EnvironmentFile").lstrip("-").startswith("/etc/driftmon/")
    assert one("CapabilityBoundingSet") == ""
    for key in ("PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectControlGroups",
                "RestrictSUIDSGID", "LockPersonality"):
        assert one(key) == "yes", key
    assert "User" not in svc  # DynamicUser allocates it
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_dockerfile():
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines()]
    instr = [ln for ln in lines if ln and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in instr if ln.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    assert any("pip install" in ln for ln in instr)
    (user,) = [ln.split()[1] for ln in instr if ln.startswith("USER ")]
    assert user.split(":")[0] not in ("root", "0")
    assert "EXPOSE 9108" in instr
    (entry,) = [ln for ln in instr if ln.startswith("ENTRYPOINT ")]
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == RUN_ARGV
    assert instr.index(f"USER {user}") < instr.index(entry)


def test_compose_stack():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svcs = compose["services"]
    assert set(svcs) >= {"kafka", "driftmon", "prometheus", "grafana"}
    kafka = svcs["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    dm = svcs["driftmon"]
    assert dm["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / dm["build"]["context"] / dm["build"]["dockerfile"]).is_file()
    # every bind mount exists; the driftmon config is valid and listens on all interfaces
    mounts = {}
    for name, svc in svcs.items():
        for vol in svc.get("volumes", []):
            src, dst = vol.split(":")[:2]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src} missing"
                mounts[dst] = DEPLOY / src
    cfg = load_config(str(mounts[CONFIG_PATH]), {"DRIFTMON_WEBHOOK_SECRET": "x"})
    assert (cfg.http.host, cfg.http.port) == ("0.0.0.0", 9108)
    assert mounts["/etc/prometheus/driftmon-rules.yml"] == RULES
    # Grafana: a default Prometheus data source and the dashboard folder provisioned
    prov = mounts["/etc/grafana/provisioning"]
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert any(d["type"] == "prometheus" and d.get("isDefault") for d in ds)
    providers = yaml.safe_load((prov / "dashboards" / "driftmon.yml").read_text())["providers"]
    dash_dir = mounts[providers[0]["options"]["path"]]
    assert (dash_dir / DASHBOARD.name).resolve() == DASHBOARD


# --------------------------------------------------------------------- live Prometheus

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scrape_target(kafka_broker, tmp_path_factory):
    """``host:port`` of a real ``driftmon run`` serving /metrics.

    It consumes synthetic traffic (history with a never-ending drift episode,
    then live ticks with malformed and late records) from the session broker
    and alerts a webhook receiver that answers 500 once; the fixture returns
    once windows closed, alerts fired and were delivered, and lag and
    readiness are exported (see tests/e2e/deploy_target.py).  On teardown the
    daemon gets SIGTERM and must drain and exit 0.
    """
    target = DriftmonTarget(kafka_broker.bootstrap, tmp_path_factory.mktemp("driftmon"), unique_name("deploy"))
    try:
        target.start()
        yield target.address
    finally:
        code = target.stop()
    assert code == 0, f"driftmon exited with {code} on SIGTERM:\n{target.log_tail()}"


@pytest.fixture(scope="module")
def prometheus(scrape_target, tmp_path_factory):
    """A real Prometheus on loopback scraping ``scrape_target`` every second
    with driftmon-rules.yml loaded; yields its base URL."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: install Debian's prometheus package"
    d = tmp_path_factory.mktemp("prometheus")
    (d / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "driftmon", "static_configs": [{"targets": [scrape_target]}]}],
    }))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(d / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited:\n{(d / 'prometheus.log').read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def poll(fn, timeout: float = 45.0, interval: float = 0.5):
    """Call fn() until it returns a falsy 'missing' value; return the last one."""
    deadline = time.monotonic() + timeout
    while True:
        missing = fn()
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(interval)


def test_live_every_dashboard_and_rule_query_returns_data(prometheus):
    need = live_queries()

    def empty():
        results = evaluate_all_queries(prometheus)  # raises at once on a parse/eval error
        return [e for e, must in need.items() if must and not results[e]]

    assert poll(empty) == []

    def empty_vars():
        out = []
        for name, (selector, label) in variable_queries().items():
            vals = prom_get(prometheus, f"/api/v1/label/{label}/values", **{"match[]": selector})
            if not vals:
                out.append(name)
        return out

    assert poll(empty_vars) == []
    segments = prom_get(prometheus, "/api/v1/label/segment/values", **{"match[]": "driftmon_divergence"})
    assert segments == ["android", "ios", "web"]


def instant(prometheus_url: str, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels (without __name__, job, instance): value} of an instant query."""
    out = {}
    for r in prom_get(prometheus_url, "/api/v1/query", query=expr)["result"]:
        labels = tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "job", "instance")))
        out[labels] = float(r["value"][1])
    return out


def test_live_series_show_the_produced_traffic(prometheus):
    """What deploy_target produced is what Prometheus holds: the panels show real data."""
    checks = {
        # every decoder reason and late events, on the stream that got them
        'sum by (reason) (driftmon_events_rejected_total{stream="interactions"}) > 0':
            {(("reason", r),) for r in ("invalid_json", "bad_type", "missing_field", "bad_timestamp", "late")},
        "sum by (stream) (driftmon_events_late_total) > 0": {(("stream", "interactions"),)},
        # the receiver answered 500 once, then accepted everything
        "sum by (receiver, outcome) (driftmon_webhook_deliveries_total) > 0":
            {(("outcome", o), ("receiver", RECEIVER)) for o in ("delivered", "retry")},
        # windows keep closing while Prometheus watches (live traffic)
        "sum by (stream) (increase(driftmon_windows_closed_total[1m])) > 0":
            {(("stream", "interactions"),), (("stream", "predictions"),), (("stream", "outcomes"),)},
        # one lag series per assigned partition
        'count by (partition) (driftmon_consumer_lag{topic=~".*[.]interactions"})':
            {(("partition", "0"),), (("partition", "1"),)},
        "driftmon_ready == 1": {()},
        # each drifting key fired once (ctr: the calibration monitor); item_id (no drift) never did
        'sum by (feature) (driftmon_alerts_total{transition="fired"}) > 0':
            {(("feature", f),) for f in ("item_category", "dwell", "score", "top_category", "ctr")},
        # predictions joined with their clicks
        'sum by (calibration, kind) (driftmon_calibration_events_total{kind="joined"}) > 0':
            {(("calibration", "ctr"), ("kind", "joined"))},
    }

    def wrong():
        return {e: sorted(got) for e, want in checks.items() if set(got := instant(prometheus, e)) != want}

    assert poll(wrong) == {}
    fired = instant(prometheus, 'sum by (feature) (driftmon_alerts_total{transition="fired"})')
    assert fired[(("feature", "item_id"),)] == 0


def test_live_rules_load_and_evaluate_against_the_target(prometheus):
    def unhealthy():
        rules = [r for g in prom_get(prometheus, "/api/v1/rules")["groups"] for r in g["rules"]]
        return [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]

    groups = prom_get(prometheus, "/api/v1/rules")["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded == {r["record"] for r in recording_rules()} | {r["alert"] for r in alerting_rules()}
    assert poll(unhealthy) == []  # every rule evaluated without error

    # What the real data produces: the drift episode moves the category mix
    # (KL about 0.12-0.2 nats), dwell times (0.3-0.5) and model scores (1.8)
    # past the critical threshold 0.1 with p far below 0.001, even in the
    # smallest segment (web, about 300 events a window); an alert escalated to
    # critical stays critical until two windows fall below warn, and the
    # episode never ends.  So DriftCritical is pending (`for:` 2m outlasts the
    # test) for every key of those four features and DriftWarning for none;
    # item_id does not drift.  Traffic flows, lag is 0, about 1% is rejected
    # and the receiver accepts everything after its one 500: no operational
    # alert.  (Offline, 30 runs x 70 s of this traffic never left that set.)
    expected = {("DriftCritical", "interactions", f, seg)
                for f in ("item_category", "dwell") for seg in (None, "android", "ios", "web")}
    expected |= {("DriftCritical", "predictions", f, None) for f in ("score", "top_category")}
    # and the ctr calibration monitor: clicks at half the predicted rate, a divergence far
    # over its critical 0.05 nats from the episode on
    expected.add(("DriftCritical", "predictions", "ctr", None))

    def active():
        alerts = prom_get(prometheus, "/api/v1/alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("stream"), a["labels"].get("feature"),
                 a["labels"].get("segment")) for a in alerts}

    assert poll(lambda: expected - active()) == set()
    assert active() == expected


# --------------------------------------------------------------------- kubernetes, scaled variant

def test_k8s_scaled_variant_runs_several_replicas_with_the_partials_topic_and_both_stages_ready():
    scaled = K8S / "scaled"
    kust = yaml.safe_load((scaled / "kustomization.yaml").read_text())
    assert "../" in kust["resources"] and "topics-job.yaml" in kust["resources"]
    patches = {p["path"] for p in kust["patches"]}
    assert patches == {"deployment-patch.yaml", "configmap-patch.yaml"}
    dep = yaml.safe_load((scaled / "deployment-patch.yaml").read_text())
    base = k8s_docs()
    assert dep["metadata"]["name"] == base["Deployment"]["metadata"]["name"]
    assert dep["spec"]["replicas"] > 1
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"  # state moves with the partition
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == base["Deployment"]["spec"]["template"]["spec"]["containers"][0]["name"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"

    cm = yaml.safe_load((scaled / "configmap-patch.yaml").read_text())
    assert cm["metadata"]["name"] == base["ConfigMap"]["metadata"]["name"]
    env = {"DRIFTMON_WEBHOOK_SECRET": "s"}
    cfg = parse_config(yaml.safe_load(cm["data"]["driftmon.yaml"]), env)
    base_cfg = parse_config(yaml.safe_load(base["ConfigMap"]["data"]["driftmon.yaml"]), env)
    assert cfg.scale is not None and base_cfg.scale is None
    assert dataclasses.replace(cfg, scale=None) == base_cfg  # only scale: differs from the base config

    job = yaml.safe_load((scaled / "topics-job.yaml").read_text())
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert f"--topic {cfg.scale.partials_topic} " in script
    assert f"--topic {cfg.scale.changelog_topic} " in script and "cleanup.policy=compact" in script
    assert cfg.kafka.bootstrap_servers[0] in script
