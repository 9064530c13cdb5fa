//! One watch and cache per kind, cluster-wide, shared by every policy and started only when a
//! One watch and cache per kind, cluster-wide, shared by every policy and started only when a
//! policy first needs the kind. Objects are pruned of what no policy reads (Secret data,
//! managedFields, last-applied annotations, and of Jobs and Secrets every field outside
//! `metadata` that no policy's expressions read) and kept as compact JSON text, parsed again
//! when a policy is evaluated. Built-in referrers keep what they reference, extracted on
//! arrival, instead of their pod templates.
//!
//! The fields kept only grow while the process runs: a policy that reads more than the cache
//! keeps asks for it (`Cache::require`) and waits for the re-list that brings it (`holds`).
//! A Job's pod template is most of its text, and the reference index needed it only to find
//! Secret names and images: keeping both whole cost about half the controller's memory with
//! 20,000 Jobs.
//!
//! Text, not parsed values: a parsed `serde_json::Value` takes 5 to 8 times the bytes of its
//! text (every map is a B-tree node sized for 11 entries, every string its own allocation),
//! and a heap profile of the controller holding 20,000 Jobs and 20,000 Secrets put 246 of its
//! 280 MiB there. Parsing again costs a few microseconds an object per evaluation, which
//! evaluations pay anyway in CEL; memory held for as long as the objects exist was the worse
//! trade.
//!
//! Each cache also numbers its changes and keeps the most recent ones in a bounded log (see
//! `Store`), so that a policy's worker can ask what changed since the evaluation it last ran
//! (`Cache::changes_since`) and evaluate only that (docs/incremental.md).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::Value as Json;
use tokio::sync::Notify;

use crate::expr::FieldTree;
use crate::refs::ObjectRefs;

/// A kind the controller may watch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
}

impl Kind {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str) -> Kind {
        Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    pub fn jobs() -> Kind {
        Kind::new("batch", "v1", "Job", "jobs")
    }
    pub fn secrets() -> Kind {
        Kind::new("", "v1", "Secret", "secrets")
    }
    pub fn namespaces() -> Kind {
        Kind::new("", "v1", "Namespace", "namespaces")
    }

    /// The kinds the built-in referrers come from.
    pub fn builtin_referrers() -> Vec<Kind> {
        vec![
            Kind::new("", "v1", "Pod", "pods"),
            Kind::new("", "v1", "ServiceAccount", "serviceaccounts"),
            Kind::new("networking.k8s.io", "v1", "Ingress", "ingresses"),
            Kind::new("apps", "v1", "Deployment", "deployments"),
            Kind::new("apps", "v1", "StatefulSet", "statefulsets"),
            Kind::new("apps", "v1", "DaemonSet", "daemonsets"),
            Kind::new("apps", "v1", "ReplicaSet", "replicasets"),
            Kind::new("batch", "v1", "Job", "jobs"),
            Kind::new("batch", "v1", "CronJob", "cronjobs"),
        ]
    }
}

/// Drops what no expression may read and what only costs memory.
pub fn prune(kind: &str, obj: &mut Json) {
    let Some(m) = obj.as_object_mut() else { return };
    if kind == "Secret" {
        // Secret data is never read into CEL, status, logs or events.
        m.remove("data");
        m.remove("stringData");
    }
    if let Some(meta) = m.get_mut("metadata").and_then(Json::as_object_mut) {
        meta.remove("managedFields");
        if let Some(ann) = meta.get_mut("annotations").and_then(Json::as_object_mut) {
            ann.remove(LAST_APPLIED);
        }
    }
}

/// kubectl's client-side apply annotation: a copy of the whole object, Secret data included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How many changes a cache remembers, by uid. A worker that last evaluated further back than
/// this evaluates in full. Each entry is a sequence number and a shared uid (24 bytes; the uid's
/// text is shared with the object's entry while the object exists, about 60 bytes more once it
/// is deleted), so a full log costs at most about 330 KiB per kind, and only kinds that see that
/// many changes fill it. 4,096 changes between two evaluations of one policy is a burst a full
/// evaluation handles as well.
pub const CHANGE_LOG: usize = 4096;

/// A cache's objects and the record of their changes, under one lock so that a reader gets a
/// sequence number and the objects as of that number together.
#[derive(Default)]
struct Store {
    /// Compact JSON text of each object, by uid.
    objects: HashMap<Arc<str>, Arc<str>>,
    /// Counts the changes of `objects`: one per object applied or deleted, one per re-list.
    seq: u64,
    /// The uid each change touched, oldest first, by sequence number; at most `CHANGE_LOG`.
    log: VecDeque<(u64, Arc<str>)>,
    /// The log holds every change numbered above this.
    log_from: u64,
}

impl Store {
    fn record(&mut self, uid: Arc<str>) {
        self.seq += 1;
        if self.log.len() >= CHANGE_LOG
            && let Some((dropped, _)) = self.log.pop_front()
        {
            self.log_from = dropped;
        }
        self.log.push_back((self.seq, uid));
    }

    fn apply(&mut self, uid: &str, text: Arc<str>) {
        // The map's key is shared with the log entry: one allocation per uid.
        let key: Arc<str> = match self.objects.get_key_value(uid) {
            Some((k, _)) => k.clone(),
            None => Arc::from(uid),
        };
        self.objects.insert(key.clone(), text);
        self.record(key);
    }

    fn delete(&mut self, uid: &str) {
        let key = match self.objects.remove_entry(uid) {
            Some((k, _)) => k,
            None => Arc::from(uid),
        };
        self.record(key);
    }

    /// A re-list replaces every object at once: what changed is not recorded, so every reader
    /// from before it starts over.
    fn relisted(&mut self, objects: HashMap<Arc<str>, Arc<str>>) {
        self.objects = objects;
        self.seq += 1;
        self.log.clear();
        self.log_from = self.seq;
    }
}

/// What changed in a cache since a sequence number: each uid once, with its object's text as it
/// is now, or None if it is gone.
#[derive(Debug, Default)]
pub struct ChangesSince {
    /// The sequence number these changes bring a reader up to.
    pub seq: u64,
    pub changed: Vec<(Arc<str>, Option<Arc<str>>)>,
}

/// One kind's cache: objects by uid, a change counter, and whether the initial list is in.
pub struct Cache {
    pub kind: Kind,
    store: Mutex<Store>,
    /// For the built-in referrer kinds: what each object references, extracted when it
    /// arrived, so that the reference index needs no pod templates in memory.
    refs: Option<Mutex<HashMap<Arc<str>, Arc<ObjectRefs>>>>,
    /// The fields objects arriving from now on are kept with: the union of what the policies
    /// reading this kind asked for (`require`). It only grows while the process runs.
    keep: Mutex<FieldTree>,
    /// The fields every object in the store holds: `keep` as it was when the current list
    /// began. A policy asking for more waits for the re-list `require` starts.
    listed: Mutex<FieldTree>,
    relist: Notify,
    /// Bumped on every change, and on a new watch error: equal means nothing to look at.
    pub version: AtomicU64,
    pub ready: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Why the cache may not be current, or None while its watch is: set by a watch error and
    /// by a list in progress, cleared only by a completed list. Sweeps pause while it is set:
    /// a verdict re-checked against a cache that missed events would re-check nothing.
    stale: Mutex<Option<String>>,
}

/// What every cached object keeps whatever policies read: its type and metadata, which
/// selectors, identity, preconditions and guards read.
fn minimal_fields() -> FieldTree {
    FieldTree::of(&[&["apiVersion"], &["kind"], &["metadata"]])
}

/// One object as the cache keeps it.
struct Entry {
    uid: Arc<str>,
    text: Arc<str>,
    refs: Option<Arc<ObjectRefs>>,
}

impl Cache {
    pub fn new(kind: Kind) -> Cache {
        // Targets and built-in referrers start with the minimum and grow with what policies
        // ask for; any other kind (policies, namespaces, custom referrers, read whole by CEL)
        // is kept whole.
        let referrer = Kind::builtin_referrers().contains(&kind);
        let keep = if referrer || kind == Kind::secrets() {
            minimal_fields()
        } else {
            FieldTree::everything()
        };
        Cache {
            kind,
            store: Mutex::new(Store::default()),
            refs: referrer.then(|| Mutex::new(HashMap::new())),
            listed: Mutex::new(keep.clone()),
            keep: Mutex::new(keep),
            relist: Notify::new(),
            version: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            last_error: Mutex::new(None),
            stale: Mutex::new(Some("not listed yet".into())),
        }
    }

    /// None while the cache is listed and its watch has not failed since; otherwise why not.
    pub fn unhealthy(&self) -> Option<String> {
        self.stale.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_stale(&self, why: Option<String>) {
        *self.stale.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Asks that objects of this kind be kept with at least `fields`. When that is more than
    /// they are kept with today, the watch lists again; `holds` says when it is done.
    pub fn require(&self, fields: &FieldTree) {
        let mut keep = self.keep.lock().unwrap_or_else(|p| p.into_inner());
        if keep.covers(fields) {
            return;
        }
        keep.merge(fields);
        tracing::info!(kind = %self.kind.kind, "a policy reads fields the cache does not keep; listing again");
        self.relist.notify_one();
    }

    /// Whether every cached object holds `fields`.
    pub fn holds(&self, fields: &FieldTree) -> bool {
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .covers(fields)
    }

    /// Calls `f` with what each object references (built-in referrer kinds only).
    pub fn for_each_refs(&self, mut f: impl FnMut(&ObjectRefs)) {
        let Some(refs) = &self.refs else { return };
        let all: Vec<Arc<ObjectRefs>> = refs
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for r in &all {
            f(r);
        }
    }

    fn refs_applied(&self, uid: &Arc<str>, r: Option<Arc<ObjectRefs>>) {
        if let Some(Ok(mut refs)) = self.refs.as_ref().map(|r| r.lock()) {
            match r {
                Some(r) => refs.insert(uid.clone(), r),
                None => refs.remove(uid),
            };
        }
    }

    fn refs_deleted(&self, uid: &str) {
        if let Some(Ok(mut refs)) = self.refs.as_ref().map(|r| r.lock()) {
            refs.remove(uid);
        }
    }

    fn refs_relisted(&self, all: HashMap<Arc<str>, Arc<ObjectRefs>>) {
        if let Some(Ok(mut refs)) = self.refs.as_ref().map(|r| r.lock()) {
            *refs = all;
        }
    }

    /// A poisoned lock means a panic while it was held; every change of the store is made
    /// whole under it, so the store is still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The objects' texts as they are now, and the sequence number they are as of; parsing
    /// happens after the lock is let go.
    fn texts(&self) -> (u64, Vec<Arc<str>>) {
        let store = self.lock();
        (store.seq, store.objects.values().cloned().collect())
    }

    /// Records an object added or modified (compact JSON text, as `to_text` writes it).
    pub fn applied(&self, uid: &str, text: Arc<str>) {
        self.lock().apply(uid, text);
    }

    pub fn deleted(&self, uid: &str) {
        self.lock().delete(uid);
    }

    /// Replaces every object, as a completed (re-)list does.
    pub fn relisted(&self, objects: HashMap<Arc<str>, Arc<str>>) {
        self.lock().relisted(objects);
    }

    /// One object's text, by uid.
    pub fn text(&self, uid: &str) -> Option<Arc<str>> {
        self.lock().objects.get(uid).cloned()
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// What changed after `seq`, or None when the log no longer reaches back that far (or a
    /// re-list came in since): the reader must then start over from every object.
    pub fn changes_since(&self, seq: u64) -> Option<ChangesSince> {
        let store = self.lock();
        if seq < store.log_from || seq > store.seq {
            return None;
        }
        let mut seen = HashSet::new();
        let changed = store
            .log
            .iter()
            .filter(|(s, _)| *s > seq)
            .filter(|(_, uid)| seen.insert(uid.clone()))
            .map(|(_, uid)| (uid.clone(), store.objects.get(uid).cloned()))
            .collect();
        Some(ChangesSince {
            seq: store.seq,
            changed,
        })
    }

    /// Every object, parsed one at a time, so that only what `f` keeps stays in memory.
    pub fn for_each(&self, mut f: impl FnMut(Json)) {
        for text in self.texts().1 {
            // The text was written by `to_text` from a parsed object, so it parses; an object
            // that somehow did not would be left out, as if it had not been listed yet.
            if let Ok(obj) = serde_json::from_str(&text) {
                f(obj);
            }
        }
    }

    /// The objects `keep` accepts, parsed with only the `fields` named (see
    /// `json::parse_pruned`).
    pub fn parsed_where(&self, fields: &FieldTree, keep: impl FnMut(&Json) -> bool) -> Vec<Json> {
        self.parsed_where_at(fields, keep).1.collect()
    }

    /// `parsed_where`, one object at a time as the iterator is read, with the sequence
    /// number the objects are as of. Only the texts are taken under the lock; a caller that
    /// keeps less than the parsed object never holds them all parsed at once.
    pub fn parsed_where_at<'a>(
        &self,
        fields: &'a FieldTree,
        mut keep: impl FnMut(&Json) -> bool + 'a,
    ) -> (u64, impl Iterator<Item = Json> + 'a) {
        let (seq, texts) = self.texts();
        let objects = texts.into_iter().filter_map(move |text| {
            crate::json::parse_pruned(&text, fields)
                .ok()
                .filter(|obj| keep(obj))
        });
        (seq, objects)
    }

    /// Every object, parsed whole.
    pub fn snapshot(&self) -> Vec<Json> {
        self.parsed_where(&FieldTree::everything(), |_| true)
    }

    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object as the cache keeps it: pruned as `prune` does, as compact JSON text. Written
    /// from the object directly, with no parsed `Value` in between.
    fn to_text(&self, mut obj: DynamicObject) -> Option<Entry> {
        let uid = obj.metadata.uid.clone()?;
        obj.metadata.managed_fields = None;
        if let Some(ann) = obj.metadata.annotations.as_mut() {
            ann.remove(LAST_APPLIED);
        }
        if self.kind.kind == "Secret"
            && let Some(m) = obj.data.as_object_mut()
        {
            m.remove("data");
            m.remove("stringData");
        }
        // Lists leave the type out of their items; evaluation reads it.
        obj.types = Some(kube::api::TypeMeta {
            api_version: self.kind.api_version(),
            kind: self.kind.kind.clone(),
        });
        let refs = match &self.refs {
            Some(_) => serde_json::to_value(&obj)
                .ok()
                .and_then(|whole| ObjectRefs::of(&whole))
                .map(Arc::new),
            None => None,
        };
        {
            let keep = self.keep.lock().unwrap_or_else(|p| p.into_inner());
            if !keep.is_whole()
                && let Some(m) = obj.data.as_object_mut()
            {
                m.retain(|k, v| match keep.child(k) {
                    Some(sub) => {
                        sub.prune(v);
                        true
                    }
                    None => false,
                });
            }
        }
        let text = serde_json::to_string(&obj).ok()?;
        Some(Entry {
            uid: Arc::from(uid),
            text: Arc::from(text),
            refs,
        })
    }
}

/// All caches, started on demand.
pub struct Caches {
    client: Client,
    page_size: u32,
    /// Label selector for the policy kinds: which policies this controller handles.
    policy_selector: Option<String>,
    caches: Mutex<BTreeMap<Kind, Arc<Cache>>>,
    /// Woken on every change of any cache.
    pub changed: Arc<Notify>,
}

impl Caches {
    pub fn new(client: Client, page_size: u32, policy_selector: Option<String>) -> Caches {
        Caches {
            client,
            page_size,
            policy_selector,
            caches: Mutex::new(BTreeMap::new()),
            changed: Arc::new(Notify::new()),
        }
    }

    /// The cache of a kind, starting its watch the first time.
    pub fn get(&self, kind: &Kind) -> Arc<Cache> {
        // A poisoned lock means a panic elsewhere; the caches map itself is still consistent
        // (entries are only ever inserted whole), so keep using it.
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = caches.get(kind) {
            return c.clone();
        }
        let cache = Arc::new(Cache::new(kind.clone()));
        caches.insert(kind.clone(), cache.clone());
        let selector = (kind.group == crate::api::GROUP)
            .then(|| self.policy_selector.clone())
            .flatten();
        tokio::spawn(run_watch(
            self.client.clone(),
            cache.clone(),
            self.page_size,
            selector,
            self.changed.clone(),
        ));
        cache
    }

    pub fn all(&self) -> Vec<Arc<Cache>> {
        self.caches
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every cache has its initial list, or has reported why it cannot list: a kind the
    /// controller may not read makes its policies `TargetUnavailable`, and must not hold the
    /// whole controller unready (and every other policy with it).
    pub fn all_ready(&self) -> bool {
        self.all().iter().all(|c| {
            c.ready.load(Ordering::Acquire)
                || c.last_error.lock().map(|e| e.is_some()).unwrap_or(false)
        })
    }
}

/// How soon after a watch error the cache lists again, at first and at most.
const RELIST_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const RELIST_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

async fn run_watch(
    client: Client,
    cache: Arc<Cache>,
    page_size: u32,
    label_selector: Option<String>,
    changed: Arc<Notify>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &cache.kind.resource());
    let mut config = watcher::Config::default().page_size(page_size);
    if let Some(s) = &label_selector {
        config = config.labels(s);
    }
    let start = || {
        watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    let mut stream = start();
    // After a watch error the stream is started over with a fresh list once this time comes:
    // a watch that resumes quietly gives no sign that it is current again, a completed list
    // does. Doubles with each error in a row, up to RELIST_BACKOFF_MAX.
    let mut relist_due: Option<tokio::time::Instant> = None;
    let mut backoff = RELIST_BACKOFF_MIN;
    // Objects of a relist in progress; swapped in whole when the list completes, so readers
    // never see a half-listed cache.
    let mut relist: Option<Vec<Entry>> = None;
    // The fields the list in progress keeps its objects with.
    let mut listing = FieldTree::everything();
    // Whether the stream has begun its list: a list begun later picks up `keep` anyway.
    let mut started = false;
    loop {
        let ev = tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = async {
                match relist_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                relist_due = None;
                stream = start();
                relist = None;
                started = false;
                continue;
            },
            _ = cache.relist.notified() => {
                let keep = cache.keep.lock().unwrap_or_else(|p| p.into_inner()).clone();
                // Not listing yet, or listing with those fields already: that list serves.
                if !started || (relist.is_some() && listing.covers(&keep)) {
                    continue;
                }
                // A policy reads more than the objects hold: list again, keeping the current
                // objects for the policies they suffice for until the new list is in.
                stream = start();
                relist = None;
                started = false;
                continue;
            }
        };
        let mut bump = true;
        match ev {
            Err(e) => {
                let message = e.to_string();
                let new = cache
                    .last_error
                    .lock()
                    .map(|mut last| {
                        let new = last.as_deref() != Some(message.as_str());
                        *last = Some(message.clone());
                        new
                    })
                    .unwrap_or(false);
                // A new error wakes the reconcile loop, so that the policies reading this kind
                // say why at once; the same error again (a refused list is retried for as long
                // as it is refused) is neither logged nor woken for.
                if new {
                    tracing::warn!(kind = %cache.kind.kind, error = %message, "watch failed; retrying with backoff");
                }
                cache.set_stale(Some(format!(
                    "the watch of {} failed ({message}); waiting for a fresh list",
                    cache.kind.plural
                )));
                if relist_due.is_none() {
                    relist_due = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(RELIST_BACKOFF_MAX);
                }
                bump = new;
            }
            Ok(Event::Init) => {
                started = true;
                if cache.ready.load(Ordering::Acquire) {
                    cache.set_stale(Some(format!("listing {} again", cache.kind.plural)));
                }
                relist = Some(Vec::new());
                listing = cache.keep.lock().unwrap_or_else(|p| p.into_inner()).clone();
                bump = false;
            }
            Ok(Event::InitApply(obj)) => {
                if let (Some(buf), Some(e)) = (relist.as_mut(), cache.to_text(obj)) {
                    buf.push(e);
                }
                bump = false;
            }
            Ok(Event::InitDone) => {
                if let Some(buf) = relist.take() {
                    let mut objects = HashMap::with_capacity(buf.len());
                    let mut refs = HashMap::new();
                    for e in buf {
                        if let Some(r) = e.refs {
                            refs.insert(e.uid.clone(), r);
                        }
                        objects.insert(e.uid, e.text);
                    }
                    cache.refs_relisted(refs);
                    cache.relisted(objects);
                    *cache.listed.lock().unwrap_or_else(|p| p.into_inner()) = listing.clone();
                }
                if let Ok(mut last) = cache.last_error.lock() {
                    *last = None;
                }
                cache.set_stale(None);
                backoff = RELIST_BACKOFF_MIN;
                relist_due = None;
                cache.ready.store(true, Ordering::Release);
            }
            Ok(Event::Apply(obj)) => {
                if let Some(e) = cache.to_text(obj) {
                    cache.refs_applied(&e.uid, e.refs);
                    cache.applied(&e.uid, e.text);
                }
            }
            Ok(Event::Delete(obj)) => {
                if let Some(uid) = obj.metadata.uid.as_ref() {
                    cache.refs_deleted(uid);
                    cache.deleted(uid);
                }
            }
        }
        if bump {
            cache.version.fetch_add(1, Ordering::AcqRel);
            changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache(kind: Kind) -> Cache {
        Cache::new(kind)
    }

    #[test]
    fn cached_text_is_the_object_pruned_with_its_type() {
        let listed: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "uid": "u1",
                "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{\"data\":{\"k\":\"c2VjcmV0\"}}", "keep": "me"},
                "managedFields": [{"manager": "kubectl"}]},
            "type": "Opaque", "data": {"k": "c2VjcmV0"}, "stringData": {"k": "secret"}}))
        .unwrap();
        let c = Cache::new(Kind::secrets());
        let whole_type = FieldTree::of(&[&["type"]]);
        assert!(!c.holds(&whole_type), "Secrets start with metadata only");
        c.require(&whole_type);
        // Asked for even the whole object, Secret data is never kept.
        c.require(&FieldTree::of(&[&["data"]]));
        let e = c.to_text(listed.clone()).unwrap();
        assert_eq!(&*e.uid, "u1");
        assert!(e.refs.is_none(), "a Secret references nothing");
        let text = e.text.clone();
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("secret\""),
            "{text}"
        );
        let parsed: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "labels": {"a": "b"},
                    "annotations": {"keep": "me"}}})
        );
        c.refs_applied(&e.uid, e.refs.clone());
        c.applied(&e.uid, e.text.clone());
        let only_labels = FieldTree::of(&[&["metadata", "labels"]]);
        assert_eq!(
            c.parsed_where(&only_labels, |_| true),
            vec![json!({"metadata": {"labels": {"a": "b"}}})]
        );
        assert!(c.parsed_where(&only_labels, |_| false).is_empty());
        assert_eq!(c.snapshot(), vec![parsed]);
    }

    #[test]
    fn referrers_keep_their_references_not_their_templates() {
        let job: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "ns", "uid": "u2"},
            "spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "registry.local/app:v1",
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]}]}}},
            "status": {"succeeded": 1}}))
        .unwrap();
        let c = Cache::new(Kind::jobs());
        let e = c.to_text(job.clone()).unwrap();
        let parsed: Json = serde_json::from_str(&e.text).unwrap();
        assert!(
            parsed.get("spec").is_none() && parsed.get("status").is_none(),
            "{parsed}"
        );
        let refs = e.refs.clone().unwrap();
        assert_eq!(refs.secrets, vec!["creds".to_string()]);
        assert_eq!(refs.images[0].repository, "app");
        c.refs_applied(&e.uid, e.refs.clone());
        c.applied(&e.uid, e.text.clone());
        let mut index = crate::refs::RefIndex::default();
        c.for_each_refs(|r| index.add_refs(r));
        assert_eq!(index.secret_referrers("ns", "creds").len(), 1);

        // A policy on Jobs reads status: later objects keep it, and the cache does not say it
        // holds it until a list with it completes.
        let status = FieldTree::of(&[&["status"]]);
        c.require(&status);
        assert!(!c.holds(&status));
        let parsed: Json = serde_json::from_str(&c.to_text(job).unwrap().text).unwrap();
        assert_eq!(parsed["status"], json!({"succeeded": 1}));
        assert!(parsed.get("spec").is_none());
        c.refs_deleted("u2");
        c.deleted("u2");
        let mut index = crate::refs::RefIndex::default();
        c.for_each_refs(|r| index.add_refs(r));
        assert!(index.secret_referrers("ns", "creds").is_empty());
    }

    /// Each uid with its text, or None when deleted.
    type Changed = Vec<(String, Option<String>)>;

    fn changed(c: &Cache, since: u64) -> Option<(u64, Changed)> {
        c.changes_since(since).map(|ch| {
            let mut v: Vec<_> = ch
                .changed
                .into_iter()
                .map(|(u, t)| (u.to_string(), t.map(|t| t.to_string())))
                .collect();
            v.sort();
            (ch.seq, v)
        })
    }

    #[test]
    fn changes_since_a_sequence_number() {
        let c = cache(Kind::jobs());
        let t = |s: &str| Arc::<str>::from(s);
        let some = |u: &str, s: &str| (u.to_string(), Some(s.to_string()));
        assert_eq!(changed(&c, 0), Some((0, vec![])));
        c.relisted(HashMap::from([(t("a"), t("a1")), (t("b"), t("b1"))]));
        assert_eq!(c.seq(), 1);
        // From before the list: nothing says which objects it brought.
        assert_eq!(changed(&c, 0), None);
        assert_eq!(changed(&c, 1), Some((1, vec![])));
        c.applied("a", t("a2"));
        c.applied("c", t("c1"));
        c.deleted("b");
        c.applied("a", t("a3"));
        let table = [
            (
                "each uid once, as it is now",
                1,
                Some((
                    5,
                    vec![some("a", "a3"), ("b".into(), None), some("c", "c1")],
                )),
            ),
            (
                "only what came after",
                3,
                Some((5, vec![some("a", "a3"), ("b".into(), None)])),
            ),
            ("up to date", 5, Some((5, vec![]))),
            ("from the future: start over", 6, None),
        ];
        for (name, since, want) in table {
            assert_eq!(changed(&c, since), want, "{name}");
        }
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_change_log_is_bounded_and_says_when_it_no_longer_reaches_back() {
        let c = cache(Kind::jobs());
        c.relisted(HashMap::new());
        for i in 0..CHANGE_LOG + 10 {
            c.applied(&format!("u{}", i % 3), Arc::from("{}"));
        }
        let store = c.lock();
        assert_eq!(store.log.len(), CHANGE_LOG);
        let (seq, from) = (store.seq, store.log_from);
        drop(store);
        assert_eq!(seq, 1 + CHANGE_LOG as u64 + 10);
        assert_eq!(from, 11);
        assert!(c.changes_since(from - 1).is_none());
        assert_eq!(c.changes_since(from).map(|ch| ch.changed.len()), Some(3));
        assert_eq!(c.changes_since(seq - 1).map(|ch| ch.changed.len()), Some(1));
    }
}
