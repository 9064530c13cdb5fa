//! The Helm chart as `helm lint` and `helm template` see it: hardened pod, probes, leader
//! election exactly when more than one replica runs, RBAC that follows the enabled targets, a
//! schema that refuses wrong values, and the same CRDs as `crds/`. tests/rbac.rs proves the RBAC
//! against a real API server.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{chart_dir as chart, helm, helm_template};

/// `helm template` as release `rel` in `retainer-system`.
fn render(args: &[&str]) -> Vec<Value> {
    helm_template("rel", "retainer-system", args)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {found:#?}");
    found[0]
}

fn container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// All rules of all (Cluster)Roles, each with the namespace of its Role (None: cluster-wide).
fn rules(docs: &[Value]) -> Vec<(Option<String>, Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| {
            let ns = (d["kind"] == "Role").then(|| {
                d["metadata"]["namespace"]
                    .as_str()
                    .expect("a Role has a namespace")
                    .to_string()
            });
            d["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| (ns.clone(), r))
        })
        .collect()
}

/// Whether some cluster-wide rule allows `verb` on every object of `group`/`resource`.
fn cluster_grants(docs: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    rules(docs).iter().any(|(ns, r)| {
        ns.is_none()
            && r.get("resourceNames").is_none()
            && strings(&r["apiGroups"]).contains(&group)
            && strings(&r["resources"]).contains(&resource)
            && strings(&r["verbs"]).contains(&verb)
    })
}

/// Whether any rule anywhere mentions `resource`.
fn mentions(docs: &[Value], resource: &str) -> bool {
    rules(docs)
        .iter()
        .any(|(_, r)| strings(&r["resources"]).contains(&resource))
}

const REFERRERS: [(&str, &str); 9] = [
    ("", "pods"),
    ("", "serviceaccounts"),
    ("networking.k8s.io", "ingresses"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
];

#[test]
fn chart_lints_and_ships_the_crds_of_crds_dir() {
    let chart = chart();
    let path = chart.to_str().expect("utf-8 path");
    for extra in [
        vec![],
        vec!["--set", "replicas=2"],
        vec!["--set", "targets.secrets=false,targets.oci=false"],
        vec!["--set", "metrics.serviceMonitor.enabled=true"],
        // tests/monitoring.rs checks their PromQL against a running controller.
        vec![
            "--set",
            "grafanaDashboard.enabled=true,prometheusRule.enabled=true",
        ],
    ] {
        let mut a = vec!["lint", "--strict", path];
        a.extend(extra.iter().copied());
        let out = helm(&a);
        assert!(
            out.status.success(),
            "helm {a:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = std::fs::read(root.join("crds/retainer.dev.yaml")).expect("crds/retainer.dev.yaml");
    let chart_crds = std::fs::read(chart.join("crds/retainer.dev.yaml"))
        .expect("chart's crds/retainer.dev.yaml");
    assert!(
        ours == chart_crds,
        "charts/retainer/crds/retainer.dev.yaml differs from crds/retainer.dev.yaml: run `make crds`"
    );
    let meta: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["version"], "0.1.0");
    assert_eq!(
        meta["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "appVersion follows Cargo.toml"
    );
}

#[test]
fn default_pod_is_hardened_probed_and_told_who_it_is() {
    let docs = render(&[]);
    let deploy = one(&docs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = container(&docs);
    assert_eq!(
        c["image"],
        format!(
            "localhost:5000/retainer/retainer:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(deploy["metadata"]["namespace"], "retainer-system");

    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}: {c:#}");
        }
    }

    let port = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port");
    assert_eq!(port["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"]["port"];
        assert!(p == "metrics" || p == 8080, "{probe} port: {p}");
    }

    let a = args(&docs);
    assert_eq!(a[0], "run");
    assert!(
        a.contains(&"--metrics-addr=0.0.0.0:8080".to_string()),
        "{a:?}"
    );
    assert!(!a.iter().any(|x| x.starts_with("--leader-elect")), "{a:?}");
    let env = c["env"].as_array().expect("env");
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {env:#?}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], path);
    }
    assert_eq!(
        deploy["spec"]["strategy"]["type"], "Recreate",
        "one unelected replica must not overlap with its successor"
    );

    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    let with_monitor = render(&["--set", "metrics.serviceMonitor.enabled=true"]);
    let sm = one(&with_monitor, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    // The chart leaves CRDs to helm's crds/ directory, which `helm template` does not print.
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
}

#[test]
fn leader_election_exactly_when_needed() {
    let lease_role = |docs: &[Value]| {
        rules(docs)
            .into_iter()
            .filter(|(_, r)| strings(&r["resources"]).contains(&"leases"))
            .collect::<Vec<_>>()
    };
    let single = render(&[]);
    assert!(!args(&single).contains(&"--leader-elect".to_string()));
    assert!(
        lease_role(&single).is_empty(),
        "no Lease grant without leader election"
    );

    for variant in [
        vec!["--set", "replicas=2"],
        vec!["--set", "leaderElection.enabled=true"],
    ] {
        let docs = render(&variant);
        let a = args(&docs);
        assert!(
            a.contains(&"--leader-elect".to_string()),
            "{variant:?}: {a:?}"
        );
        assert!(
            a.contains(&"--lease-name=retainer-leader".to_string()),
            "{a:?}"
        );
        let deploy = one(&docs, "Deployment");
        assert!(deploy["spec"]["strategy"]["type"] != "Recreate");
        let rules = lease_role(&docs);
        assert_eq!(rules.len(), 2, "{rules:#?}");
        for (ns, r) in &rules {
            assert_eq!(
                ns.as_deref(),
                Some("retainer-system"),
                "a Role, not cluster-wide"
            );
            assert_eq!(strings(&r["apiGroups"]), ["coordination.k8s.io"]);
            match r.get("resourceNames") {
                Some(names) => {
                    assert_eq!(strings(names), ["retainer-leader"]);
                    assert_eq!(strings(&r["verbs"]), ["get", "update"]);
                }
                // create cannot be limited by name.
                None => assert_eq!(strings(&r["verbs"]), ["create"]),
            }
        }
        let binding = of_kind(&docs, "RoleBinding");
        assert!(
            binding
                .iter()
                .any(|b| b["roleRef"]["name"] == "rel-retainer-leader-election"
                    && b["subjects"][0]["name"] == "rel-retainer"
                    && b["subjects"][0]["namespace"] == "retainer-system"),
            "{binding:#?}"
        );
    }
    let docs = render(&["--set", "replicas=3,leaderElection.leaseName=other"]);
    let a = args(&docs);
    assert!(a.contains(&"--lease-name=other".to_string()), "{a:?}");
    assert!(
        rules(&docs)
            .iter()
            .any(|(_, r)| strings(&r["resourceNames"]) == ["other"])
    );
}

#[test]
fn rbac_follows_the_enabled_targets() {
    // Always: the policies, their status, events, namespaces.
    for docs in [
        render(&[]),
        render(&["--set", "targets.secrets=false,targets.oci=false"]),
    ] {
        for verb in ["list", "watch"] {
            assert!(cluster_grants(
                &docs,
                "retainer.dev",
                "retentionpolicies",
                verb
            ));
            assert!(cluster_grants(
                &docs,
                "retainer.dev",
                "clusterretentionpolicies",
                verb
            ));
            assert!(cluster_grants(&docs, "", "namespaces", verb));
        }
        assert!(cluster_grants(
            &docs,
            "retainer.dev",
            "retentionpolicies/status",
            "patch"
        ));
        assert!(cluster_grants(
            &docs,
            "retainer.dev",
            "clusterretentionpolicies/status",
            "patch"
        ));
        assert!(cluster_grants(&docs, "events.k8s.io", "events", "create"));
        assert!(cluster_grants(&docs, "events.k8s.io", "events", "patch"));
        // Never more than needed: no wildcards, no writes besides those.
        for (_, r) in rules(&docs) {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(!strings(&r[field]).contains(&"*"), "wildcard in {r}");
            }
            let verbs = strings(&r["verbs"]);
            for w in [
                "update",
                "deletecollection",
                "escalate",
                "bind",
                "impersonate",
            ] {
                assert!(!verbs.contains(&w), "{w} in {r}");
            }
            if verbs.contains(&"patch") {
                let res = strings(&r["resources"]);
                assert!(
                    res.iter().all(|x| x.ends_with("/status") || *x == "events"),
                    "patch only on status and events: {r}"
                );
            }
        }
        let crb = one(&docs, "ClusterRoleBinding");
        assert_eq!(crb["roleRef"]["name"], "rel-retainer");
        assert_eq!(crb["subjects"][0]["name"], "rel-retainer");
    }

    let default = render(&[]);
    for verb in ["get", "list", "watch", "delete"] {
        assert!(
            cluster_grants(&default, "batch", "jobs", verb),
            "jobs {verb}"
        );
        assert!(
            cluster_grants(&default, "", "secrets", verb),
            "secrets {verb}"
        );
    }
    for (group, resource) in REFERRERS {
        assert!(
            cluster_grants(&default, group, resource, "list"),
            "{resource}"
        );
        assert!(
            cluster_grants(&default, group, resource, "watch"),
            "{resource}"
        );
    }
    assert!(!cluster_grants(&default, "", "pods", "get"));

    let jobs_only = render(&["--set", "targets.secrets=false,targets.oci=false"]);
    for verb in ["get", "list", "watch", "delete"] {
        assert!(
            cluster_grants(&jobs_only, "batch", "jobs", verb),
            "jobs {verb}"
        );
    }
    assert!(
        !mentions(&jobs_only, "secrets"),
        "jobs only: no secrets rule"
    );
    for (_, resource) in REFERRERS.iter().filter(|(_, r)| *r != "jobs") {
        assert!(
            !mentions(&jobs_only, resource),
            "jobs only: no {resource} rule"
        );
    }

    let no_jobs = render(&["--set", "targets.jobs=false"]);
    assert!(
        cluster_grants(&no_jobs, "batch", "jobs", "list"),
        "Jobs still refer to Secrets"
    );
    assert!(!cluster_grants(&no_jobs, "batch", "jobs", "delete"));
    assert!(!cluster_grants(&no_jobs, "batch", "jobs", "get"));
    assert!(cluster_grants(&no_jobs, "", "secrets", "delete"));

    // OCI only: referrers, and `get` on exactly the named credential Secrets.
    let oci_only = render(&[
        "--set",
        "targets.jobs=false,targets.secrets=false",
        "--set-json",
        r#"oci.credentialSecrets=[{"name":"regcred"},{"namespace":"ci","name":"push"},{"namespace":"ci","name":"pull"},{"name":"regcred"}]"#,
    ]);
    assert!(!cluster_grants(&oci_only, "", "secrets", "get"));
    assert!(!cluster_grants(&oci_only, "", "secrets", "list"));
    assert!(cluster_grants(&oci_only, "", "pods", "watch"));
    assert!(!cluster_grants(&oci_only, "batch", "jobs", "delete"));
    let mut secret_rules: Vec<(String, Vec<&str>, Vec<&str>)> = Vec::new();
    let all = rules(&oci_only);
    for (ns, r) in &all {
        if strings(&r["resources"]).contains(&"secrets") {
            secret_rules.push((
                ns.clone().expect("only namespaced Roles name secrets"),
                strings(&r["resourceNames"]),
                strings(&r["verbs"]),
            ));
        }
    }
    secret_rules.sort();
    assert_eq!(
        secret_rules,
        vec![
            ("ci".to_string(), vec!["push", "pull"], vec!["get"]),
            ("retainer-system".to_string(), vec!["regcred"], vec!["get"]),
        ]
    );
    let bindings = of_kind(&oci_only, "RoleBinding");
    assert_eq!(bindings.len(), 2, "{bindings:#?}");

    // Credential Secrets of a disabled OCI target are not granted.
    let no_oci = render(&[
        "--set",
        "targets.oci=false,targets.secrets=false",
        "--set",
        "oci.credentialSecrets[0].name=regcred",
    ]);
    assert!(!mentions(&no_oci, "secrets"));

    let extra = render(&[
        "--set",
        "targets.secrets=false,targets.oci=false",
        "--set-json",
        r#"extraReferrerRules=[{"apiGroups":["fleet.cattle.io"],"resources":["bundles"],"verbs":["list","watch"]}]"#,
    ]);
    assert!(cluster_grants(
        &extra,
        "fleet.cattle.io",
        "bundles",
        "watch"
    ));

    let none = render(&["--set", "rbac.create=false"]);
    assert!(rules(&none).is_empty());
}

#[test]
fn schema_refuses_wrong_values() {
    let chart = chart();
    let path = chart.to_str().expect("utf-8 path");
    for (set, says) in [
        ("replicas=abc", "replicas"),
        ("replicaCount=2", "replicaCount"),
        ("targets.jobs=yes", "jobs"),
        ("targets.pods=true", "pods"),
        ("controller.debounce=5", "debounce"),
        ("metrics.port=70000", "port"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("webhook.failurePolicy=Maybe", "failurePolicy"),
    ] {
        let out = helm(&["template", "rel", path, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} rendered");
        assert!(
            err.contains("schema") && err.contains(says),
            "--set {set}: {err}"
        );
    }
    let out = helm(&[
        "template",
        "rel",
        path,
        "--set-json",
        r#"oci.credentialSecrets=[{"namespace":"ci"}]"#,
    ]);
    assert!(!out.status.success(), "a credential Secret needs a name");
}

#[test]
fn no_webhook_unless_asked() {
    let docs = render(&[]);
    assert!(of_kind(&docs, "ValidatingWebhookConfiguration").is_empty());
    assert!(!args(&docs).iter().any(|a| a.starts_with("--webhook")));
}

/// The chart's own certificate: the webhook configuration trusts the CA the Secret holds, and
/// the controller, serving the Secret's files, presents a certificate that verifies for the
/// Service's name against that CA.
#[tokio::test]
async fn webhook_serves_the_charts_certificate_for_its_service() {
    use base64::Engine;
    let docs = render(&["--set", "webhook.enabled=true"]);
    let vwc = one(&docs, "ValidatingWebhookConfiguration");
    let hook = &vwc["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(
        hook["clientConfig"]["service"]["path"],
        retainer::admission::PATH
    );
    assert_eq!(
        strings(&hook["rules"][0]["resources"]),
        ["retentionpolicies", "clusterretentionpolicies"]
    );
    let service = hook["clientConfig"]["service"]["name"].as_str().unwrap();
    let svc = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == service)
        .expect("the webhook's Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    let ports = &container(&docs)["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "webhook" && p["containerPort"] == 9443),
        "{ports}"
    );
    let a = args(&docs);
    assert!(a.contains(&"--webhook-cert-dir=/tls".to_string()), "{a:?}");
    assert!(
        a.contains(&"--webhook-addr=0.0.0.0:9443".to_string()),
        "{a:?}"
    );

    let secret = one(&docs, "Secret");
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |v: &Value| b64.decode(v.as_str().unwrap()).unwrap();
    assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    let dir = std::env::temp_dir().join(support::unique("retainer-chart-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), field(&secret["data"]["tls.crt"])).unwrap();
    std::fs::write(dir.join("tls.key"), field(&secret["data"]["tls.key"])).unwrap();
    std::fs::write(dir.join("ca.crt"), field(&secret["data"]["ca.crt"])).unwrap();
    let addr = retainer::admission::serve(&retainer::admission::WebhookOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.clone(),
    })
    .await
    .expect("serving the chart's certificate");
    let name = format!("{service}.retainer-system.svc");
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", &name, "-verify_hostname", &name, "-CAfile"])
        .arg(dir.join("ca.crt"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl s_client");
    assert!(
        out.status.success(),
        "the served certificate verifies for {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn webhook_certificate_from_cert_manager() {
    let docs = render(&[
        "--set",
        "webhook.enabled=true",
        "--set",
        "webhook.certManager.enabled=true",
    ]);
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "cert-manager writes the Secret"
    );
    let vwc = one(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "retainer-system/rel-retainer-webhook"
    );
    assert!(vwc["webhooks"][0]["clientConfig"]["caBundle"].is_null());
    let cert = one(&docs, "Certificate");
    assert_eq!(cert["spec"]["secretName"], "rel-retainer-webhook-tls");
    assert_eq!(
        strings(&cert["spec"]["dnsNames"])[0],
        "rel-retainer-webhook.retainer-system.svc"
    );
    assert_eq!(
        one(&docs, "Issuer")["spec"]["selfSigned"],
        serde_json::json!({})
    );

    let docs = render(&[
        "--set",
        "webhook.enabled=true",
        "--set",
        "webhook.certManager.enabled=true",
        "--set",
        "webhook.certManager.issuerRef.name=corp",
        "--set",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(of_kind(&docs, "Issuer").is_empty());
    let issuer = &one(&docs, "Certificate")["spec"]["issuerRef"];
    assert_eq!(issuer["name"], "corp");
    assert_eq!(issuer["kind"], "ClusterIssuer");
}
