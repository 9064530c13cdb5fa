//! The validating admission webhook on the real API server: `kubectl apply` of a policy the
//! controller could not use fails with the controller's own Ready=False message; a valid one
//! is stored; with the webhook off the same invalid policy is stored and the controller reports
//! exactly what the webhook said. A certificate rotated on disk is served without a restart.
//!
//! The webhook configuration selects only objects carrying this test's label, so that policies
//! of tests running at the same time against the same API server never reach it.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use retainer::admission::{CERT_FILE, KEY_FILE, PATH, WebhookOptions};
use serde_json::{Value, json};
use support::*;
use tokio::process::Command;

const LABEL: &str = "retainer.dev/admission-test";

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throw-away CA (returned as PEM) and, in `dir`, a serving certificate for 127.0.0.1 signed
/// by it, named as a kubernetes.io/tls Secret names them.
fn certificates(dir: &Path, cn: &str) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=retainer-admission-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "next.key",
            "-out",
            "serving.csr",
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(
        dir.join("serving.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "serving.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "next.crt",
            "-days",
            "1",
            "-extfile",
            "serving.ext",
        ],
    );
    // As kubelet updates a Secret volume: the new files appear whole.
    std::fs::rename(dir.join("next.key"), dir.join(KEY_FILE)).unwrap();
    std::fs::rename(dir.join("next.crt"), dir.join(CERT_FILE)).unwrap();
    std::fs::read_to_string(dir.join("ca.crt")).unwrap()
}

fn webhook_configuration(
    name: &str,
    port: u16,
    ca: &str,
    selector: &str,
) -> ValidatingWebhookConfiguration {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "validate.retainer.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}{PATH}"), "caBundle": ca},
            "rules": [{
                "apiGroups": ["retainer.dev"], "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["retentionpolicies", "clusterretentionpolicies"],
                "scope": "*",
            }],
            // Fail, so that a webhook the API server cannot reach fails this test instead of
            // letting everything through.
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
            "objectSelector": {"matchLabels": {LABEL: selector}},
        }],
    }))
    .expect("a ValidatingWebhookConfiguration")
}

async fn kubectl_apply(manifest: &Value) -> Output {
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (eval \"$(scripts/testbed.sh env)\")");
    let mut stdin = child.stdin.take().expect("piped stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, manifest.to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    child.wait_with_output().await.expect("kubectl apply")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the webhook said, from kubectl's error line.
fn denial(out: &Output) -> Option<String> {
    const DENIED: &str = "admission webhook \"validate.retainer.dev\" denied the request: ";
    let err = stderr(out);
    let at = err.find(DENIED)?;
    Some(err[at + DENIED.len()..].trim_end().to_string())
}

fn policy(kind: &str, ns: Option<&str>, name: &str, selector: &str, keep: &str) -> Value {
    let mut metadata = json!({"name": name, "labels": {LABEL: selector}});
    metadata["labels"][OWNER_LABEL] = json!(owner());
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "retainer.dev/v1alpha1", "kind": kind, "metadata": metadata,
        "spec": {"target": {"kind": "Job", "selector": {"matchLabels": {"app": name}}},
                 "schedule": "@daily", "dryRun": true, "keep": keep},
    })
}

#[tokio::test]
async fn kubectl_apply_of_an_invalid_policy_fails_with_the_controllers_message() {
    let bed = setup("admission").await;
    let dir = std::env::temp_dir().join(unique("retainer-admission-"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = certificates(&dir, "first");
    let addr = retainer::admission::serve(&WebhookOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        cert_dir: dir.clone(),
    })
    .await
    .expect("webhook serving");
    let selector = unique("a");
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(bed.client.clone());
    let vwc_name = unique("retainer-admission-test-");
    vwcs.create(
        &PostParams::default(),
        &webhook_configuration(&vwc_name, addr.port(), &ca, &selector),
    )
    .await
    .expect("create the webhook configuration");

    // A type error cel-go's checker refuses: `string + bool` has no overload.
    let invalid = policy(
        "RetentionPolicy",
        Some(&bed.ns),
        "invalid",
        &selector,
        "'a' + true",
    );
    // The API server picks new webhook configurations up from its own watch: retry until the
    // webhook answers.
    let refused = wait_for("the webhook to refuse", Duration::from_secs(30), || async {
        let out = kubectl_apply(&invalid).await;
        if out.status.success() {
            // Stored before the API server saw the configuration: take it away and retry.
            let _ = policies(&bed)
                .delete("invalid", &DeleteParams::default())
                .await;
            return None;
        }
        denial(&out)
    })
    .await;
    assert!(
        refused.starts_with("InvalidExpression: "),
        "refused with: {refused}"
    );

    let valid = policy(
        "RetentionPolicy",
        Some(&bed.ns),
        "valid",
        &selector,
        "age < duration('24h')",
    );
    let out = kubectl_apply(&valid).await;
    assert!(
        out.status.success(),
        "a valid policy is stored: {}",
        stderr(&out)
    );

    // An edit that breaks a stored policy is refused too; the stored one stays as it was.
    let broken = policy(
        "RetentionPolicy",
        Some(&bed.ns),
        "valid",
        &selector,
        "[1, 'a'].size() > 0",
    );
    let out = kubectl_apply(&broken).await;
    assert!(
        denial(&out).is_some_and(|d| d.starts_with("InvalidExpression: ")),
        "breaking edit: {}",
        stderr(&out)
    );
    let stored = policies(&bed).get("valid").await.unwrap();
    assert_eq!(stored.data["spec"]["keep"], "age < duration('24h')");

    // Cluster-scoped policies go through the same judgement; a bad schedule is refused.
    let mut cluster = policy(
        "ClusterRetentionPolicy",
        None,
        &unique("c-"),
        &selector,
        "true",
    );
    cluster["spec"]["schedule"] = json!("@fortnightly");
    let out = kubectl_apply(&cluster).await;
    assert!(
        denial(&out).is_some_and(|d| d.starts_with("InvalidSchedule: ")),
        "cluster policy: {}",
        stderr(&out)
    );

    // A rotated certificate (new CA, new key) is served without a restart once the API
    // server trusts it.
    let ca2 = certificates(&dir, "second");
    let mut vwc = vwcs.get(&vwc_name).await.unwrap();
    vwc.webhooks.as_mut().unwrap()[0].client_config.ca_bundle =
        Some(k8s_openapi::ByteString(ca2.into_bytes()));
    vwcs.replace(&vwc_name, &PostParams::default(), &vwc)
        .await
        .expect("replace the webhook configuration");
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(30),
        || async {
            let out = kubectl_apply(&invalid).await;
            assert!(
                !out.status.success(),
                "stored while the webhook is on: {}",
                stderr(&out)
            );
            (denial(&out).as_deref() == Some(refused.as_str())).then_some(())
        },
    )
    .await;

    // Not std's blocking Command: the webhook answers on this test's own runtime.
    let served = Command::new("openssl")
        .args(["s_client", "-brief", "-connect", &addr.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl s_client");
    let served = String::from_utf8_lossy(&served.stderr);
    assert!(
        served.contains("CN = second") || served.contains("CN=second"),
        "the rotated certificate is served: {served}"
    );

    // The webhook off: the same policy is stored, and the controller says what it said.
    vwcs.delete(&vwc_name, &DeleteParams::default())
        .await
        .expect("delete the webhook configuration");
    wait_for(
        "the policy to be stored without the webhook",
        Duration::from_secs(30),
        || async { kubectl_apply(&invalid).await.status.success().then_some(()) },
    )
    .await;
    let ready = ready_condition(&bed, "invalid").await;
    assert_eq!(ready["status"], "False");
    assert_eq!(
        format!(
            "{}: {}",
            ready["reason"].as_str().unwrap(),
            ready["message"].as_str().unwrap()
        ),
        refused,
        "the controller reports what the webhook refused with"
    );

    let _ = std::fs::remove_dir_all(&dir);
    bed.cleanup().await;
}
