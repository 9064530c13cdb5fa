//! The chart's RBAC on a real API server: the rendered ServiceAccount, (Cluster)Roles and
//! bindings are applied, a token is minted for the ServiceAccount, and the real `retainer run`
//! runs with nothing but that token. It must sweep Jobs, Secrets and OCI artifacts, elect
//! itself on its Lease and record Events, and be refused what the chart does not grant.
//!
//! No shared in-process controller runs here: only the binary under the ServiceAccount acts,
//! and (with `--policy-selector`) only on this test's policies. Controllers of other test
//! binaries running at the same time watch every namespace and may act on these policies too;
//! the audit lines in this binary's log and its own Events are what show that it did.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope;
use kube::{Client, Config};
use serde_json::{Value, json};
use support::*;
use tokio::process::{Child, Command};

const NEVER: &str = "0 0 29 2 *";
const FIELD_MANAGER: &str = "retainer-rbac-test";

/// Applies every rendered object but the Deployment (no container runtime here), by
/// server-side apply as the admin.
async fn apply_chart(admin: &Client, docs: &[Value]) {
    for d in docs.iter().filter(|d| d["kind"] != "Deployment") {
        let api_version = d["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = d["kind"].as_str().expect("kind");
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discovering {kind}: {e}"));
        let name = d["metadata"]["name"].as_str().expect("name");
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(admin.clone(), &ar),
            Scope::Namespaced => Api::namespaced_with(
                admin.clone(),
                d["metadata"]["namespace"]
                    .as_str()
                    .expect("the chart names the namespace of namespaced objects"),
                &ar,
            ),
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(d),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
}

/// Deletes the chart's cluster-scoped objects; the namespaced ones go with the namespace.
async fn remove_cluster_objects(admin: &Client, docs: &[Value]) {
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    for d in docs {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        if d["kind"] == "ClusterRole" {
            let _ = roles.delete(name, &DeleteParams::default()).await;
        } else if d["kind"] == "ClusterRoleBinding" {
            let _ = bindings.delete(name, &DeleteParams::default()).await;
        }
    }
}

fn service_account(docs: &[Value]) -> String {
    docs.iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount")
        .to_string()
}

/// A kubeconfig that authenticates as the ServiceAccount with a token from the TokenRequest
/// API, for the admin kubeconfig's server and CA; and a client built from it.
async fn as_service_account(admin: &Client, ns: &str, sa: &str, dir: &Path) -> (PathBuf, Client) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // None: the API server's own audiences.
            audiences: None,
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("a TokenRequest answers with a status")
        .token;

    let admin_config = Kubeconfig::read().expect("the admin kubeconfig ($KUBECONFIG)");
    let context = admin_config
        .current_context
        .as_ref()
        .and_then(|c| admin_config.contexts.iter().find(|n| &n.name == c))
        .and_then(|n| n.context.as_ref())
        .expect("the admin kubeconfig has a current context");
    let cluster = admin_config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .expect("the current context's cluster");
    let mut cluster_json = json!({"server": cluster.server.clone().expect("a server URL")});
    if let Some(ca) = &cluster.certificate_authority_data {
        cluster_json["certificate-authority-data"] = json!(ca);
    }
    if let Some(ca) = &cluster.certificate_authority {
        cluster_json["certificate-authority"] = json!(ca);
    }
    // JSON is YAML: any kubeconfig reader takes it.
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": cluster_json}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "testbed", "user": sa, "namespace": ns}}],
        "current-context": sa,
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&kubeconfig).expect("kubeconfig json"),
    )
    .expect("write kubeconfig");
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).expect("the written kubeconfig reads"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config from the token kubeconfig");
    (
        path,
        Client::try_from(config).expect("client as the ServiceAccount"),
    )
}

/// Whether the ServiceAccount behind `client` may do `verb` (SelfSubjectAccessReview).
async fn may(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> bool {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: ns.map(String::from),
                name: name.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

struct Controller {
    child: Child,
    log: PathBuf,
    identity: String,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What this process's audit lines say the policy `key` (namespace/name) deleted: names,
    /// or `repository@digest` for OCI.
    fn deleted(&self, key: &str) -> BTreeSet<String> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "retainer::audit" && v["fields"]["message"] == "deleted")
            .filter(|v| v["fields"]["policy"] == key)
            .filter_map(|v| v["fields"]["name"].as_str().map(String::from))
            .collect()
    }
}

/// A dockerconfigjson Secret `regcred` for `registry`.
async fn create_regcred(bed: &Bed, registry: &str) {
    let dockerconfig = json!({"auths": {registry: {"username": "u", "password": "p"}}});
    let regcred: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": dockerconfig.to_string()}}))
    .expect("secret");
    Api::<Secret>::namespaced(bed.client.clone(), &bed.ns)
        .create(&PostParams::default(), &regcred)
        .await
        .expect("create regcred");
}

/// Labels this test's policies with the controller's identity.
const TEST_LABEL: &str = "retainer.dev/rbac-test";

/// Applies a RetentionPolicy labelled for the controller `identity`.
async fn apply(bed: &Bed, identity: &str, name: &str, spec: Value) {
    let mut labels = serde_json::Map::new();
    labels.insert(TEST_LABEL.into(), json!(identity));
    let obj = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": name, "labels": labels}, "spec": spec});
    policies(bed)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply policy");
}

/// Whether the binary has `--policy-selector`. With it this controller handles only this test's
/// policies: the controller reconciles policies one after another, so a slow policy of a test
/// running beside this one (a runaway expression, an unreachable registry) would otherwise
/// hold up these.
fn has_policy_selector() -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--policy-selector"))
        .unwrap_or(false)
}

/// Starts `retainer run` with the kubeconfig given; with leader election on a Lease in
/// `lease_namespace` if one is given.
fn start_controller(
    kubeconfig: &Path,
    lease_namespace: Option<&str>,
    identity: &str,
    dir: &Path,
) -> Controller {
    let log = dir.join(format!("{identity}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retainer"));
    cmd.arg("run");
    if has_policy_selector() {
        cmd.arg(format!("--policy-selector={TEST_LABEL}={identity}"));
    }
    if let Some(ns) = lease_namespace {
        cmd.args([
            "--leader-elect",
            "--lease-namespace",
            ns,
            "--lease-name",
            "retainer-leader",
        ]);
    }
    let child = cmd
        .args([
            "--identity",
            identity,
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "200ms",
            "--registry-timeout",
            "5s",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("RETAINER_LEADER_ELECT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    Controller {
        child,
        log,
        identity: identity.to_string(),
    }
}

/// The address the controller serves metrics on, from its start-up log line.
async fn metrics_addr(c: &Controller) -> String {
    wait_for(
        "the metrics address in the log",
        Duration::from_secs(20),
        || async {
            c.log().lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v["fields"]["addr"].as_str().map(String::from)
            })
        },
    )
    .await
}

async fn names<K>(api: &Api<K>) -> BTreeSet<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Waits for Ready=True of the current generation; fails at once on Ready=False.
async fn ready_true(bed: &Bed, name: &str, c: &Controller) {
    let cond = ready_condition(bed, name).await;
    assert_eq!(
        cond["status"],
        "True",
        "{name} not Ready under the chart's RBAC: {cond}\ncontroller log:\n{}",
        c.log()
    );
}

/// Waits for Ready=False, TargetUnavailable, polled: an unrestricted controller of another
/// test may find the policy Ready in between.
///
/// The policy is touched while waiting. A refused list does not wake the controller's loop
/// (src/controller/caches.rs: a watch error neither bumps the cache nor notifies), so a policy
/// first reconciled before its list failed says nothing until something else changes; on a
/// quiet cluster it would show no status at all.
async fn target_unavailable(bed: &Bed, name: &str) -> Value {
    let api = policies(bed);
    let mut polls = 0u32;
    let cond = wait_for(
        &format!("{name} to report TargetUnavailable"),
        Duration::from_secs(30),
        || {
            polls += 1;
            let poke = polls.is_multiple_of(5);
            let api = api.clone();
            async move {
                if poke {
                    let patch = json!({"metadata": {"annotations": {"retainer.dev/rbac-test-poke": polls.to_string()}}});
                    let _ = api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
                let p = api.get(name).await.ok()?;
                p.data["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready" && c["reason"] == "TargetUnavailable")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(cond["status"], "False", "{cond}");
    cond
}

const SWEEP_REASONS: [&str; 4] = ["Swept", "DryRun", "SweepFailed", "SweepBlocked"];

/// Proves that the sweep of `policy` was this controller's work: its own Swept Event (so
/// events.k8s.io create is granted) reports no failure, and its audit log names exactly
/// `expected` as deleted. When another test binary's controller swept the same
/// policy (its own Event shows it), it may have deleted first; then this controller can only
/// be held to deleting nothing else and failing nothing.
async fn attribute(bed: &Bed, c: &Controller, policy: &str, expected: BTreeSet<String>) {
    let events: Api<Event> = Api::namespaced(bed.client.clone(), &bed.ns);
    let sweeps = || async {
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(policy)
                    && SWEEP_REASONS.contains(&e.reason.as_deref().unwrap_or_default())
            })
            .collect::<Vec<Event>>()
    };
    let mine = wait_for(
        &format!("a sweep Event on {policy} from {}", c.identity),
        Duration::from_secs(15),
        || async {
            sweeps()
                .await
                .into_iter()
                .find(|e| e.reporting_instance.as_deref() == Some(c.identity.as_str()))
        },
    )
    .await;
    let note = mine.note.clone().unwrap_or_default();
    assert_eq!(mine.reason.as_deref(), Some("Swept"), "{note}\n{}", c.log());
    assert!(note.contains("failed 0"), "{note}\n{}", c.log());
    let deleted = c.deleted(&format!("{}/{policy}", bed.ns));
    let others: BTreeSet<String> = sweeps()
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .filter(|i| *i != c.identity)
        .collect();
    if others.is_empty() {
        assert_eq!(deleted, expected, "{}", c.log());
    } else {
        eprintln!(
            "cross-talk: {others:?} also swept {policy}; this controller deleted {deleted:?} of {expected:?}"
        );
        assert!(deleted.is_subset(&expected), "{}", c.log());
    }
}

#[tokio::test]
async fn the_charts_service_account_runs_the_controller_and_nothing_more() {
    let bed = Bed::new("rbac").await;
    install_crds(&bed.client).await;
    let admin = bed.client.clone();
    let ns = bed.ns.clone();
    let dir = std::env::temp_dir().join(unique("retainer-rbac-"));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // A unique release: its ClusterRole and binding must not meet another run's.
    let release = unique("rbac-");
    let docs = helm_template(
        &release,
        &ns,
        &[
            "--set",
            "targets.jobs=true,targets.secrets=true,targets.oci=true,leaderElection.enabled=true",
            "--set",
            "oci.credentialSecrets[0].name=regcred",
            "--set-json",
            r#"extraReferrerRules=[{"apiGroups":[""],"resources":["configmaps"],"verbs":["list","watch"]}]"#,
        ],
    );
    apply_chart(&admin, &docs).await;
    let sa = service_account(&docs);
    let (kubeconfig, sa_client) = as_service_account(&admin, &ns, &sa, &dir).await;
    let identity = unique("rbac-controller-");
    let mut controller = start_controller(&kubeconfig, Some(&ns), &identity, &dir);

    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    wait_for(
        "the ServiceAccount's controller to take its Lease",
        Duration::from_secs(20),
        || async {
            let l = leases.get_opt("retainer-leader").await.ok()??;
            (l.spec?.holder_identity.as_deref() == Some(identity.as_str())).then_some(())
        },
    )
    .await;

    // Jobs: the two highest names stay, the other finished ones go.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    for i in 0..4 {
        job(
            &bed,
            &format!("job-{i}"),
            json!({"app": "rbac"}),
            "succeeded",
        )
        .await;
    }
    apply(
        &bed,
        &identity,
        "jobs",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "rbac"}}},
            "orderBy": "object.metadata.name", "keep": "rank < 2", "schedule": NEVER}),
    )
    .await;
    ready_true(&bed, "jobs", &controller).await;
    summary(&bed, "jobs", 4).await;
    let swept = sweep(&bed, "jobs").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert_eq!(names(&jobs).await, set(&["job-2", "job-3"]));
    attribute(&bed, &controller, "jobs", set(&["job-0", "job-1"])).await;

    // Secrets: Helm release history; the newest two stay, and so do the revision a Pod mounts
    // and the one a ConfigMap names (a custom referrer, granted by extraReferrerRules).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    for v in 1..=5 {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("sh.helm.release.v1.app.v{v}"),
                "labels": {"owner": "helm", "name": "app", "version": v.to_string()}},
            "type": "helm.sh/release.v1", "data": {"release": "SDRzSQ=="}}))
        .expect("secret");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("create release secret");
    }
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "mounts-v1"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "r", "secret": {"secretName": "sh.helm.release.v1.app.v1"}}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "pins-v2"},
        "data": {"release": "sh.helm.release.v1.app.v2"}}))
    .expect("configmap");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    apply(
        &bed,
        &identity,
        "helm-history",
        json!({"target": {"kind": "Secret", "fieldSelector": "type=helm.sh/release.v1",
                "selector": {"matchLabels": {"owner": "helm"}}},
            "groupBy": "object.metadata.labels['name']",
            "orderBy": "int(object.metadata.labels['version'])",
            "keep": "rank < 2 || referencedBy.size() > 0",
            "referencedBy": [{"apiVersion": "v1", "kind": "ConfigMap",
                "refs": "[object.data.?release.orValue('')]"}],
            "schedule": NEVER}),
    )
    .await;
    ready_true(&bed, "helm-history", &controller).await;
    summary(&bed, "helm-history", 5).await;
    let swept = sweep(&bed, "helm-history").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    let left: BTreeSet<String> = names(&secrets)
        .await
        .into_iter()
        .filter(|n| n.starts_with("sh.helm"))
        .collect();
    assert_eq!(
        left,
        set(&[
            "sh.helm.release.v1.app.v1",
            "sh.helm.release.v1.app.v2",
            "sh.helm.release.v1.app.v4",
            "sh.helm.release.v1.app.v5",
        ])
    );
    attribute(
        &bed,
        &controller,
        "helm-history",
        set(&["sh.helm.release.v1.app.v3"]),
    )
    .await;

    // OCI: the newest image stays, and the one a Pod runs; the others' digests are deleted.
    // The policy reads its registry credentials as the ServiceAccount; olareg, open, ignores them.
    let reg = registry("olareg");
    create_regcred(&bed, &reg).await;
    let repo = format!("{}/app", unique("rbac"));
    let mut digests = Vec::new();
    for i in 1..=4 {
        let created = format!("2026-01-0{i}T00:00:00Z");
        digests.push(push_image(&reg, &repo, &format!("t{i}"), &unique("l"), &created, None).await);
    }
    let runs: Pod = serde_json::from_value(json!({"metadata": {"name": "runs-t1"},
        "spec": {"containers": [{"name": "c", "image": format!("{reg}/{repo}:t1")}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &runs)
        .await
        .expect("create pod");
    apply(
        &bed,
        &identity,
        "images",
        json!({"target": {"kind": "OCIArtifact",
                "registry": {"url": format!("http://{reg}"), "repositories": [repo],
                    "credentialsSecretRef": {"name": "regcred"}}},
            "keep": "rank < 1 || referencedBy.size() > 0", "schedule": NEVER}),
    )
    .await;
    ready_true(&bed, "images", &controller).await;
    summary(&bed, "images", 4).await;
    let swept = sweep(&bed, "images").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    let mut still = Vec::new();
    for d in &digests {
        still.push(exists(&reg, &repo, d, None).await);
    }
    assert_eq!(still, [true, false, false, true], "t1 runs, t4 is newest");
    attribute(
        &bed,
        &controller,
        "images",
        [1, 2]
            .iter()
            .map(|&i| format!("{repo}@{}", digests[i]))
            .collect(),
    )
    .await;

    // Everything it needed it could read: all caches listed, nothing refused.
    let addr = metrics_addr(&controller).await;
    let readyz = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("/readyz");
    assert_eq!(readyz.status().as_u16(), 200, "{}", controller.log());
    let log = controller.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the controller was refused something under the chart's RBAC:\n{log}"
    );

    // And no more than granted.
    let sa_cms: Api<ConfigMap> = Api::namespaced(sa_client.clone(), &ns);
    forbidden(
        sa_cms.delete("pins-v2", &DeleteParams::default()).await,
        "deleting a ConfigMap",
    );
    let sa_secrets: Api<Secret> = Api::namespaced(sa_client.clone(), &ns);
    let new: Secret =
        serde_json::from_value(json!({"metadata": {"name": "planted"}})).expect("secret");
    forbidden(
        sa_secrets.create(&PostParams::default(), &new).await,
        "creating a Secret",
    );
    let sa_jobs: Api<Job> = Api::namespaced(sa_client.clone(), &ns);
    forbidden(
        sa_jobs
            .patch(
                "job-3",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "changing a Job",
    );
    let sa_leases: Api<Lease> = Api::namespaced(sa_client.clone(), &ns);
    forbidden(
        sa_leases.get("some-other-lease").await,
        "reading another Lease",
    );
    assert!(
        !may(
            &sa_client,
            "update",
            "retainer.dev",
            "retentionpolicies",
            Some(&ns),
            None
        )
        .await
    );
    assert!(
        !may(
            &sa_client,
            "list",
            "coordination.k8s.io",
            "leases",
            Some(&ns),
            None
        )
        .await
    );

    // A policy naming a referrer kind the chart does not grant says so in its status.
    apply(
        &bed,
        &identity,
        "ungranted",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "none"}}},
            "keep": "referencedBy.size() > 0",
            "referencedBy": [{"apiVersion": "v1", "kind": "ReplicationController",
                "refs": "[object.metadata.name]"}],
            "schedule": NEVER}),
    )
    .await;
    let cond = target_unavailable(&bed, "ungranted").await;
    let message = cond["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("replicationcontrollers") && message.contains("forbidden"),
        "{cond}"
    );

    let _ = controller.child.kill().await;
    remove_cluster_objects(&admin, &docs).await;
    bed.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_the_secrets_target_only_named_credentials_are_readable() {
    let bed = Bed::new("rbac-nosecrets").await;
    install_crds(&bed.client).await;
    let admin = bed.client.clone();
    let ns = bed.ns.clone();
    let dir = std::env::temp_dir().join(unique("retainer-rbac-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let release = unique("rbac-");
    let docs = helm_template(
        &release,
        &ns,
        &[
            "--set",
            "targets.secrets=false",
            "--set",
            "oci.credentialSecrets[0].name=regcred",
            "--set",
            "oci.caBundles[0].kind=ConfigMap",
            "--set",
            "oci.caBundles[0].name=registry-ca",
        ],
    );
    apply_chart(&admin, &docs).await;
    let (kubeconfig, sa) = as_service_account(&admin, &ns, &service_account(&docs), &dir).await;

    for verb in ["list", "watch", "get", "delete"] {
        assert!(
            !may(&sa, verb, "", "secrets", None, None).await,
            "{verb} secrets cluster-wide"
        );
        assert!(
            !may(&sa, verb, "", "secrets", Some(&ns), None).await,
            "{verb} secrets in {ns}"
        );
    }
    assert!(
        may(&sa, "get", "", "secrets", Some(&ns), Some("regcred")).await,
        "the named registry credentials"
    );
    assert!(!may(&sa, "get", "", "secrets", Some(&ns), Some("other")).await);
    assert!(!may(&sa, "delete", "", "secrets", Some(&ns), Some("regcred")).await);
    assert!(!may(&sa, "get", "", "secrets", Some("default"), Some("regcred")).await);
    // A registry's CA bundle: that ConfigMap, no other.
    assert!(
        may(&sa, "get", "", "configmaps", Some(&ns), Some("registry-ca")).await,
        "the named CA bundle"
    );
    assert!(!may(&sa, "get", "", "configmaps", Some(&ns), Some("other")).await);
    assert!(!may(&sa, "list", "", "configmaps", Some(&ns), None).await);
    assert!(!may(&sa, "get", "", "secrets", Some(&ns), Some("registry-ca")).await);
    // Still what Job and OCI policies need.
    assert!(may(&sa, "delete", "batch", "jobs", Some(&ns), None).await);
    assert!(may(&sa, "watch", "", "pods", None, None).await);
    assert!(
        may(
            &sa,
            "patch",
            "retainer.dev",
            "retentionpolicies/status",
            Some(&ns),
            None
        )
        .await
    );
    // Attempted, not only reviewed.
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns);
    forbidden(
        secrets.list(&ListParams::default()).await,
        "listing Secrets",
    );
    // No leader election asked for: no Lease either.
    assert!(
        !may(
            &sa,
            "create",
            "coordination.k8s.io",
            "leases",
            Some(&ns),
            None
        )
        .await
    );

    // The controller under this account: an OCI policy reads its credentials through the
    // named-Secret Role and sweeps; a Secret policy is told it cannot list Secrets.
    let identity = unique("rbac-nosecrets-");
    let mut controller = start_controller(&kubeconfig, None, &identity, &dir);
    let reg = registry("olareg");
    let repo = format!("{}/app", unique("rbac"));
    create_regcred(&bed, &reg).await;
    let old = push_image(
        &reg,
        &repo,
        "old",
        &unique("l"),
        "2026-01-01T00:00:00Z",
        None,
    )
    .await;
    let new = push_image(
        &reg,
        &repo,
        "new",
        &unique("l"),
        "2026-01-02T00:00:00Z",
        None,
    )
    .await;
    apply(
        &bed,
        &identity,
        "images",
        json!({"target": {"kind": "OCIArtifact",
                "registry": {"url": format!("http://{reg}"), "repositories": [repo],
                    "credentialsSecretRef": {"name": "regcred"}}},
            "keep": "rank < 1", "schedule": NEVER}),
    )
    .await;
    ready_true(&bed, "images", &controller).await;
    summary(&bed, "images", 2).await;
    let swept = sweep(&bed, "images").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert!(!exists(&reg, &repo, &old, None).await);
    assert!(exists(&reg, &repo, &new, None).await);
    attribute(
        &bed,
        &controller,
        "images",
        set(&[&format!("{repo}@{old}")]),
    )
    .await;

    apply(
        &bed,
        &identity,
        "secrets",
        json!({"target": {"kind": "Secret"}, "keep": "false", "schedule": NEVER}),
    )
    .await;
    let cond = target_unavailable(&bed, "secrets").await;
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("secrets") && m.contains("forbidden")),
        "{cond}"
    );

    let _ = controller.child.kill().await;
    remove_cluster_objects(&admin, &docs).await;
    bed.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}
