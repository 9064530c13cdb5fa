use super::*;
use serde_json::json;

type Expected<'a> = Option<(&'a str, &'a str, Option<&'a str>, Option<&'a str>)>;

#[test]
fn image_references_normalise_like_the_kubelet() {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases: Vec<(String, Expected)> = vec![
        (
            "nginx".into(),
            Some(("docker.io", "library/nginx", Some("latest"), None)),
        ),
        (
            "nginx:1.25".into(),
            Some(("docker.io", "library/nginx", Some("1.25"), None)),
        ),
        (
            "bitnami/redis:7".into(),
            Some(("docker.io", "bitnami/redis", Some("7"), None)),
        ),
        (
            "docker.io/nginx".into(),
            Some(("docker.io", "library/nginx", Some("latest"), None)),
        ),
        (
            "index.docker.io/library/nginx:1".into(),
            Some(("docker.io", "library/nginx", Some("1"), None)),
        ),
        (
            "127.0.0.1:5000/team/app:v1.2.3".into(),
            Some(("127.0.0.1:5000", "team/app", Some("v1.2.3"), None)),
        ),
        (
            "localhost/app".into(),
            Some(("localhost", "app", Some("latest"), None)),
        ),
        (
            "Registry.Example.com/a/b/c:1".into(),
            Some(("registry.example.com", "a/b/c", Some("1"), None)),
        ),
        (
            format!("ghcr.io/org/app@{d}"),
            Some(("ghcr.io", "org/app", None, Some(d))),
        ),
        (
            format!("ghcr.io/org/app:1.0@{d}"),
            Some(("ghcr.io", "org/app", Some("1.0"), Some(d))),
        ),
        (
            format!("docker-pullable://ghcr.io/org/app@{d}"),
            Some(("ghcr.io", "org/app", None, Some(d))),
        ),
        (d.to_string(), None),
        ("".into(), None),
        ("app:".into(), None),
    ];
    for (input, want) in cases {
        let got = ImageRef::parse(&input);
        let want = want.map(|(reg, repo, tag, dig)| ImageRef {
            registry: reg.into(),
            repository: repo.into(),
            tag: tag.map(Into::into),
            digest: dig.map(Into::into),
        });
        assert_eq!(got, want, "{input}");
    }
}

fn secret_names(obj: serde_json::Value) -> Vec<String> {
    secrets_of(&obj).into_iter().collect()
}

#[test]
fn every_builtin_secret_path_is_found() {
    let pod_spec = json!({
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [
            {"name": "v1", "secret": {"secretName": "vol"}},
            {"name": "v2", "projected": {"sources": [{"secret": {"name": "projected"}}, {"configMap": {"name": "cm"}}]}},
        ],
        "containers": [{"name": "c", "image": "x",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}},
                    {"name": "B", "value": "plain"}],
            "envFrom": [{"secretRef": {"name": "envfrom"}}, {"configMapRef": {"name": "cm"}}]}],
        "initContainers": [{"name": "i", "image": "x", "env": [{"name": "C", "valueFrom": {"secretKeyRef": {"name": "init-env", "key": "k"}}}]}],
    });
    let all = vec!["env", "envfrom", "init-env", "projected", "pull", "vol"];
    let cases = vec![
        ("Pod", json!({"kind": "Pod", "spec": pod_spec.clone()})),
        (
            "Deployment",
            json!({"kind": "Deployment", "spec": {"template": {"spec": pod_spec.clone()}}}),
        ),
        (
            "StatefulSet",
            json!({"kind": "StatefulSet", "spec": {"template": {"spec": pod_spec.clone()}}}),
        ),
        (
            "DaemonSet",
            json!({"kind": "DaemonSet", "spec": {"template": {"spec": pod_spec.clone()}}}),
        ),
        (
            "ReplicaSet",
            json!({"kind": "ReplicaSet", "spec": {"template": {"spec": pod_spec.clone()}}}),
        ),
        (
            "Job",
            json!({"kind": "Job", "spec": {"template": {"spec": pod_spec.clone()}}}),
        ),
        (
            "CronJob",
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec.clone()}}}}}),
        ),
    ];
    for (kind, obj) in cases {
        assert_eq!(secret_names(obj), all, "{kind}");
    }
    assert_eq!(
        secret_names(
            json!({"kind": "ServiceAccount", "secrets": [{"name": "token"}], "imagePullSecrets": [{"name": "pull"}]})
        ),
        vec!["pull", "token"]
    );
    assert_eq!(
        secret_names(
            json!({"kind": "Ingress", "spec": {"tls": [{"secretName": "tls-a"}, {"hosts": ["x"]}]}})
        ),
        vec!["tls-a"]
    );
    assert!(secret_names(json!({"kind": "ConfigMap", "data": {"secretName": "no"}})).is_empty());
}

#[test]
fn images_by_tag_and_by_status_digest() {
    let d = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "a", "name": "p"},
        "spec": {"containers": [{"image": "127.0.0.1:5000/team/app:v2"}],
                 "initContainers": [{"image": "127.0.0.1:5000/team/init:1"}],
                 "ephemeralContainers": [{"image": "busybox"}]},
        "status": {"containerStatuses": [{"imageID": format!("127.0.0.1:5000/team/app@{d}")}]}});
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "b", "name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "127.0.0.1:5000/team/app:v1"}]}}}}}});
    let idx = RefIndex::build([&pod, &cron]);
    let reg = "127.0.0.1:5000";
    let names = |v: Vec<Referrer>| {
        v.into_iter()
            .map(|r| format!("{}/{}", r.kind, r.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(idx.image_referrers(reg, "team/app", d, &[])),
        vec!["Pod/p"]
    );
    assert_eq!(
        names(idx.image_referrers(reg, "team/app", "sha256:other", &["v1".into()])),
        vec!["CronJob/c"]
    );
    assert_eq!(
        names(idx.image_referrers(reg, "team/app", "sha256:other", &["v2".into()])),
        vec!["Pod/p"]
    );
    assert!(
        idx.image_referrers(reg, "team/app", "sha256:other", &["v3".into()])
            .is_empty()
    );
    assert_eq!(
        names(idx.image_referrers(reg, "team/init", "sha256:x", &["1".into()])),
        vec!["Pod/p"]
    );
    assert_eq!(
        names(idx.image_referrers(
            "docker.io",
            "library/busybox",
            "sha256:x",
            &["latest".into()]
        )),
        vec!["Pod/p"]
    );
    // Another registry with the same repository is not referenced.
    assert!(
        idx.image_referrers("127.0.0.1:5001", "team/app", d, &["v2".into()])
            .is_empty()
    );
}

#[test]
fn registries_and_repositories_match_as_the_kubelet_resolves_them() {
    let pod = |image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "a", "name": "p"},
            "spec": {"containers": [{"image": image}]}})
    };
    // (what the Pod names, the artifact's registry and repository, whether it matches)
    let table = [
        ("nginx:1.27", "docker.io", "nginx", true),
        ("nginx:1.27", "docker.io", "library/nginx", true),
        (
            "docker.io/library/nginx:1.27",
            "index.docker.io",
            "nginx",
            true,
        ),
        (
            "index.docker.io/library/nginx:1.27",
            "registry-1.docker.io",
            "library/nginx",
            true,
        ),
        (
            "registry.example.com:443/team/app:1.27",
            "registry.example.com",
            "team/app",
            true,
        ),
        (
            "registry.example.com/team/app:1.27",
            "REGISTRY.example.com:443",
            "team/app",
            true,
        ),
        ("localhost:80/team/app:1.27", "localhost", "team/app", true),
        (
            "registry.example.com:5000/team/app:1.27",
            "registry.example.com",
            "team/app",
            false,
        ),
        (
            "registry.example.com/nginx:1.27",
            "registry.example.com",
            "library/nginx",
            false,
        ),
        ("nginx:1.27", "docker.io", "team/nginx", false),
    ];
    for (image, registry, repository, want) in table {
        let idx = RefIndex::build([&pod(image)]);
        let found = !idx
            .image_referrers(registry, repository, "sha256:x", &["1.27".into()])
            .is_empty();
        assert_eq!(found, want, "{image} against {registry}/{repository}");
    }
}
