//! Grace-period marks as the policy's status keeps them (`status.gracePeriodMarks`), pure.
//!
//! A mark is when a candidate was first seen as one by a sweep; it is deleted only if it is
//! still a candidate a grace period later. Kept in memory only, a restart or a new leader would
//! start every grace period over; kept in status, the next controller reads them back without
//! any write permission on the objects themselves.
//!
//! Size: a status must fit in an etcd object (1.5 MB by default) next to everything else, and is
//! sent whole on every write. Marks are therefore stored as 12 hex digits of a hash of their key
//! (13 bytes each with the separator, against 36 for a uid), grouped by the second they were
//! made in, and capped at `MAX_PERSISTED` (about 130 kB): the oldest marks, the ones nearest
//! their deletion, are the ones kept. A mark that did not fit starts over after a restart.
//!
//! Safety: a hash can only match the wrong object if two keys share 48 bits; when two current
//! candidates share a hash neither takes the stored mark, and a mark that matches nothing is
//! dropped. Any doubt restarts a grace period, so an object is deleted later, never earlier.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::GraceMarks;

/// Marks at most this many candidates in status.
pub const MAX_PERSISTED: usize = 10_000;

/// 12 hex digits of the 64-bit FNV-1a hash of `key`. Stable across versions and platforms (a
/// change would only restart grace periods, never shorten them).
pub fn short_hash(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

/// The marks to store: grouped by second (rounded up: later, never earlier), oldest first,
/// at most `cap` of them.
pub fn encode(marks: &HashMap<String, Timestamp>, cap: usize) -> Vec<GraceMarks> {
    let mut all: Vec<(i64, String)> = marks
        .iter()
        .map(|(k, t)| {
            let ceil = if t.subsec_nanosecond() > 0 {
                t.as_second() + 1
            } else {
                t.as_second()
            };
            (ceil, short_hash(k))
        })
        .collect();
    all.sort();
    all.truncate(cap);
    let mut groups: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (t, h) in all {
        groups.entry(t).or_default().push(h);
    }
    groups
        .into_iter()
        .filter_map(|(t, keys)| {
            Some(GraceMarks {
                marked_at: Time(Timestamp::from_second(t).ok()?),
                keys: keys.join(" "),
            })
        })
        .collect()
}

/// The stored marks by hash. A hash stored twice keeps its later time.
pub fn decode(stored: &[GraceMarks]) -> HashMap<String, Timestamp> {
    let mut out: HashMap<String, Timestamp> = HashMap::new();
    for g in stored {
        for h in g.keys.split_ascii_whitespace() {
            let t = out.entry(h.to_string()).or_insert(g.marked_at.0);
            *t = (*t).max(g.marked_at.0);
        }
    }
    out
}

/// Gives each current candidate (`candidates`, by mark key) that has no mark yet its stored
/// one, unless another candidate has the same hash.
pub fn restore(
    marks: &mut HashMap<String, Timestamp>,
    stored: &HashMap<String, Timestamp>,
    candidates: &[String],
) {
    if stored.is_empty() {
        return;
    }
    let mut by_hash: HashMap<String, Vec<&String>> = HashMap::new();
    for c in candidates {
        by_hash.entry(short_hash(c)).or_default().push(c);
    }
    for (h, keys) in by_hash {
        if let ([key], Some(t)) = (keys.as_slice(), stored.get(&h)) {
            marks.entry((*key).clone()).or_insert(*t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn hashes_are_stable_and_short() {
        assert_eq!(short_hash("").len(), 12);
        // Pinned: a change would restart every stored grace period on upgrade.
        assert_eq!(short_hash("abc"), "e71fa2190541");
        assert_ne!(short_hash("u1"), short_hash("u2"));
    }

    #[test]
    fn round_trip_groups_by_second_and_rounds_up() {
        let mut marks = HashMap::new();
        marks.insert("u1".to_string(), ts("2026-01-01T00:00:00Z"));
        marks.insert("u2".to_string(), ts("2026-01-01T00:00:00Z"));
        marks.insert("u3".to_string(), ts("2026-01-01T00:00:05.2Z"));
        let stored = encode(&marks, MAX_PERSISTED);
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].marked_at.0, ts("2026-01-01T00:00:00Z"));
        assert_eq!(stored[0].keys.split(' ').count(), 2);
        assert_eq!(
            stored[1].marked_at.0,
            ts("2026-01-01T00:00:06Z"),
            "later, not earlier"
        );
        assert_eq!(
            encode(&marks, MAX_PERSISTED),
            stored,
            "deterministic: no status churn"
        );

        let decoded = decode(&stored);
        let mut back = HashMap::new();
        let candidates: Vec<String> = ["u1", "u3", "u4"].map(String::from).to_vec();
        restore(&mut back, &decoded, &candidates);
        assert_eq!(back.get("u1"), Some(&ts("2026-01-01T00:00:00Z")));
        assert_eq!(back.get("u3"), Some(&ts("2026-01-01T00:00:06Z")));
        assert_eq!(back.get("u4"), None, "never marked: starts now");
        assert_eq!(back.get("u2"), None, "no longer a candidate");
    }

    #[test]
    fn the_cap_keeps_the_oldest_marks() {
        let marks: HashMap<String, Timestamp> = (0..5)
            .map(|i| {
                (
                    format!("u{i}"),
                    ts("2026-01-01T00:00:00Z") + jiff::SignedDuration::from_secs(i),
                )
            })
            .collect();
        let stored = encode(&marks, 3);
        let times: Vec<Timestamp> = stored.iter().map(|g| g.marked_at.0).collect();
        assert_eq!(
            times,
            vec![
                ts("2026-01-01T00:00:00Z"),
                ts("2026-01-01T00:00:01Z"),
                ts("2026-01-01T00:00:02Z")
            ]
        );
    }

    #[test]
    fn a_shared_hash_restores_nothing() {
        let decoded: HashMap<String, Timestamp> =
            [(short_hash("a"), ts("2026-01-01T00:00:00Z"))].into();
        let mut marks = HashMap::new();
        // A fabricated collision: the same key twice stands for two candidates with one hash.
        restore(&mut marks, &decoded, &["a".into(), "a".into()]);
        assert!(marks.is_empty());
        // An existing mark is never replaced by a stored one.
        let mut marks: HashMap<String, Timestamp> =
            [("a".to_string(), ts("2026-02-01T00:00:00Z"))].into();
        restore(&mut marks, &decoded, &["a".into()]);
        assert_eq!(marks["a"], ts("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn one_hundred_thousand_marks_fit_under_the_cap() {
        let t = ts("2026-01-01T00:00:00Z");
        let marks: HashMap<String, Timestamp> = (0..100_000)
            .map(|i| (format!("{i:08x}-0000-4000-8000-000000000000"), t))
            .collect();
        let stored = encode(&marks, MAX_PERSISTED);
        let bytes = serde_json::to_vec(&stored).unwrap().len();
        assert!(bytes < 150_000, "{bytes} bytes");
        assert_eq!(decode(&stored).len(), MAX_PERSISTED);
    }
}
