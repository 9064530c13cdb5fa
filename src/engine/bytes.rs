//! Storage bytes of OCI artifacts, from the descriptors of the OCIArtifact documents.
//!
//! A registry stores blobs (manifests, configs, layers) once per repository however many
//! manifests reference them, and garbage collection reclaims a blob only when no manifest
//! references it any more. So bytes are always counted as sets of unique blobs within one
//! repository, never as sums of manifest sizes:
//! - an artifact's footprint is its manifest, its config and layers, the footprints of the
//!   manifests it lists (an index) and of the artifacts that refer to it (signatures, SBOMs:
//!   they are deleted with it);
//! - what deletions free is every blob of the deleted artifacts that no surviving artifact of
//!   the repository references.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value as Json;

fn str_of<'a>(doc: &'a Json, key: &str) -> Option<&'a str> {
    doc.get(key).and_then(Json::as_str)
}

/// `{digest, size}` of a descriptor, if it has both.
fn descriptor(d: &Json) -> Option<(&str, u64)> {
    Some((str_of(d, "digest")?, d.get("size")?.as_u64()?))
}

/// The blobs a document itself references: its manifest, config and layers.
pub fn direct_blobs(doc: &Json) -> Vec<(&str, u64)> {
    let mut out = Vec::new();
    if let (Some(d), Some(s)) = (
        str_of(doc, "digest"),
        doc.get("size").and_then(Json::as_u64),
    ) {
        out.push((d, s));
    }
    out.extend(doc.get("config").and_then(descriptor));
    out.extend(
        doc.get("layers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(descriptor),
    );
    out
}

fn children(doc: &Json) -> impl Iterator<Item = &str> {
    doc.get("manifests")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().or_else(|| str_of(c, "digest")))
}

/// Unique blobs, digest → size.
pub type Blobs = BTreeMap<String, u64>;

/// The sum of a set of unique blobs.
pub fn total(blobs: &Blobs) -> u64 {
    blobs.values().fold(0u64, |a, b| a.saturating_add(*b))
}

/// The artifacts of one repository, by digest, and who refers to whom.
#[derive(Default)]
pub struct Repository<'a> {
    docs: HashMap<&'a str, &'a Json>,
    referrers: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Repository<'a> {
    pub fn add(&mut self, doc: &'a Json) {
        let Some(digest) = str_of(doc, "digest") else {
            return;
        };
        self.docs.insert(digest, doc);
        if let Some(subject) = str_of(doc, "subject") {
            self.referrers.entry(subject).or_default().push(digest);
        }
    }

    /// The unique blobs deleting `digest` would take out of use: see the module comment.
    pub fn footprint(&self, digest: &str) -> Blobs {
        let mut out = Blobs::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = vec![digest];
        while let Some(d) = stack.pop() {
            let Some(doc) = self.docs.get(d) else {
                continue;
            };
            if !seen.insert(d) {
                continue;
            }
            for (b, s) in direct_blobs(doc) {
                out.insert(b.to_string(), s);
            }
            stack.extend(children(doc));
            stack.extend(self.referrers.get(d).into_iter().flatten().copied());
        }
        out
    }
}

/// A group's blobs as planned deletions take artifacts out of it one by one: counts how many
/// remaining members reference each blob, so what a member's removal frees is known at once.
#[derive(Default)]
pub struct Ledger {
    uses: HashMap<String, (usize, u64)>,
    total: u64,
}

impl Ledger {
    pub fn add(&mut self, blobs: &Blobs) {
        for (d, s) in blobs {
            let e = self.uses.entry(d.clone()).or_insert((0, *s));
            if e.0 == 0 {
                self.total = self.total.saturating_add(*s);
            }
            e.0 += 1;
        }
    }

    pub fn remove(&mut self, blobs: &Blobs) {
        for d in blobs.keys() {
            if let Some(e) = self.uses.get_mut(d)
                && e.0 > 0
            {
                e.0 -= 1;
                if e.0 == 0 {
                    self.total = self.total.saturating_sub(e.1);
                }
            }
        }
    }

    /// The bytes of the blobs some remaining member references.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// What a set of repositories holds, and what deleting some of their artifacts frees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    /// Unique blobs of every artifact, per repository, summed over repositories.
    pub held: u64,
    /// Unique blobs of the deleted artifacts that no surviving artifact of their repository
    /// references.
    pub freed: u64,
}

/// `docs` are OCIArtifact documents (any repositories); `deleted` names (repository, digest).
pub fn storage<'a>(
    docs: impl IntoIterator<Item = &'a Json>,
    deleted: &BTreeSet<(String, String)>,
) -> Storage {
    // repository → (blobs in use by survivors, blobs of deleted artifacts)
    let mut repos: BTreeMap<&str, (Blobs, Blobs)> = BTreeMap::new();
    for doc in docs {
        let (Some(repo), Some(digest)) = (str_of(doc, "repository"), str_of(doc, "digest")) else {
            continue;
        };
        let (kept, gone) = repos.entry(repo).or_default();
        let into = if deleted.contains(&(repo.to_string(), digest.to_string())) {
            gone
        } else {
            kept
        };
        for (b, s) in direct_blobs(doc) {
            into.insert(b.to_string(), s);
        }
    }
    let mut out = Storage::default();
    for (kept, gone) in repos.values() {
        let mut all = kept.clone();
        all.extend(gone.iter().map(|(d, s)| (d.clone(), *s)));
        out.held = out.held.saturating_add(total(&all));
        let freed: u64 = gone
            .iter()
            .filter(|(d, _)| !kept.contains_key(*d))
            .fold(0u64, |a, (_, s)| a.saturating_add(*s));
        out.freed = out.freed.saturating_add(freed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn art(repo: &str, digest: &str, size: u64, layers: &[(&str, u64)]) -> Json {
        json!({"repository": repo, "digest": digest, "size": size,
               "config": {"mediaType": "c", "digest": format!("cfg-{digest}"), "size": 10},
               "layers": layers.iter().map(|(d, s)| json!({"digest": d, "size": s})).collect::<Vec<_>>()})
    }

    #[test]
    fn shared_layers_count_once_per_repository() {
        let docs = [
            art("app", "a", 100, &[("base", 1000), ("la", 50)]),
            art("app", "b", 100, &[("base", 1000), ("lb", 70)]),
            art("other", "c", 100, &[("base", 1000)]),
        ];
        let none = BTreeSet::new();
        // app: a 100+10+50, b 100+10+70, base 1000 once; other: 100+10+1000.
        assert_eq!(storage(&docs, &none).held, 1340 + 1110);
        let del_a = BTreeSet::from([("app".to_string(), "a".to_string())]);
        assert_eq!(
            storage(&docs, &del_a),
            Storage {
                held: 2450,
                freed: 160
            },
            "base stays: b uses it"
        );
        let del_ab = BTreeSet::from([
            ("app".to_string(), "a".to_string()),
            ("app".to_string(), "b".to_string()),
        ]);
        assert_eq!(
            storage(&docs, &del_ab).freed,
            1340,
            "other's copy of base is another repository's"
        );
    }

    #[test]
    fn footprints_take_referrers_and_index_children_along() {
        let mut sig = art("app", "sig", 30, &[("sigblob", 5)]);
        sig["subject"] = json!("a");
        let mut sigsig = art("app", "sigsig", 20, &[]);
        sigsig["subject"] = json!("sig");
        let mut index = json!({"repository": "app", "digest": "idx", "size": 40});
        index["manifests"] = json!(["a", "b"]);
        let docs = [
            art("app", "a", 100, &[("base", 1000)]),
            art("app", "b", 100, &[("base", 1000), ("lb", 7)]),
            sig,
            sigsig,
            index,
        ];
        let mut repo = Repository::default();
        for d in &docs {
            repo.add(d);
        }
        // a 110 + base 1000 + sig 30+10+5 + sigsig 20+10
        assert_eq!(total(&repo.footprint("a")), 1185);
        // idx 40 + a's footprint + b 110+7 (base once)
        assert_eq!(total(&repo.footprint("idx")), 40 + 1185 + 117);
        assert_eq!(total(&repo.footprint("unknown")), 0);

        let mut ledger = Ledger::default();
        let (fa, fb) = (repo.footprint("a"), repo.footprint("b"));
        ledger.add(&fa);
        ledger.add(&fb);
        assert_eq!(ledger.total(), 1185 + 117);
        ledger.remove(&fa);
        assert_eq!(ledger.total(), 1117, "base is still b's");
        ledger.remove(&fb);
        assert_eq!(ledger.total(), 0);
        ledger.remove(&fb);
        assert_eq!(ledger.total(), 0, "removing twice frees nothing more");
    }
}
