//! Leader election on a coordination.k8s.io Lease, the way client-go's leaderelection does it.
//!
//! No replica trusts the times written in the Lease: they come from another machine's clock.
//! A replica that does not hold the lease remembers the record it last read and when, on its
//! own monotonic clock, it saw that record change; it takes the lease over only once the record
//! has stayed the same for a whole lease duration of its own time (client-go's `observedTime`
//! and `isLeaseValid`). The holder's `renewTime` only matters by changing. So a replica whose
//! wall clock is minutes off neither steals a lease that is being renewed nor waits forever for
//! one that is not.
//!
//! The holder, in turn, leads only until its renew deadline (two thirds of the lease duration,
//! client-go's 10 s of 15 s) after the start of its last successful renewal, measured on its
//! monotonic clock; a replica waiting for the lease starts counting only after that renewal
//! reached the API server, and counts a whole lease duration. The third in between absorbs
//! clocks that run at somewhat different rates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("reading lease {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error("writing lease {name}: {source}")]
    Write { name: String, source: kube::Error },
}

/// The two clocks of leader election: a monotonic one, for every duration the election measures,
/// and a wall clock, only for the times written into the Lease for people and tools to read.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
    fn wall(&self) -> Timestamp;
}

/// The system's clocks, the wall clock shifted by `offset`. The offset exists for tests
/// (`retainer run --clock-offset`, hidden): it makes one process behave as if its machine's
/// clock were off, so that a test can show that skew does not give two leaders.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock {
    offset: SignedDuration,
}

impl SystemClock {
    pub fn with_offset(offset: SignedDuration) -> Self {
        SystemClock { offset }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> Timestamp {
        let now = Timestamp::now();
        // Out of range only for offsets of thousands of years, which no test asks for.
        now.checked_add(self.offset).unwrap_or(now)
    }
}

/// Until when this process may act as the leader. Shared by the elector, which sets it, the
/// sweep executors, which ask it before every delete, and the status writers, which ask it
/// before every write. Without leader election the process always leads.
#[derive(Debug)]
pub struct Leadership {
    clock: Arc<dyn Clock>,
    elected: bool,
    /// None until the first acquisition: an elected process does not lead before it.
    until: Mutex<Option<Instant>>,
}

impl Default for Leadership {
    /// Without leader election: always leading.
    fn default() -> Self {
        Leadership {
            clock: Arc::new(SystemClock::default()),
            elected: false,
            until: Mutex::new(None),
        }
    }
}

impl Leadership {
    /// With leader election: leading only while the elector keeps renewing the lease.
    pub fn elected(clock: Arc<dyn Clock>) -> Self {
        Leadership {
            clock,
            elected: true,
            until: Mutex::new(None),
        }
    }

    fn set_until(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Whether this process may still act as the leader: always without leader election; with
    /// it, only before the renew deadline of its last successful renewal. A sweep checks it
    /// before every delete and a worker before every status write: a leader cut off from the
    /// API server (another replica may lead by then) must not go on deleting or writing once
    /// the server answers again, before the lost lease is noticed and the process exits.
    pub fn still_leading(&self) -> bool {
        if !self.elected {
            return true;
        }
        match *self.until.lock().unwrap_or_else(|p| p.into_inner()) {
            None => false,
            Some(until) => self.clock.now() < until,
        }
    }
}

/// The Lease record as this replica last saw it change, and when, on its monotonic clock.
#[derive(Clone, Debug)]
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

/// What one attempt does with the record it read.
#[derive(Debug, PartialEq)]
enum Step {
    /// Another replica holds the lease and this one has not seen it unchanged for long enough.
    Wait,
    /// Write this record: a renewal of our own lease, or a takeover.
    Write(LeaseSpec),
}

/// One decision of client-go's `tryAcquireOrRenew` on a record read from the API server:
/// `observed` is updated when the record differs from the one last seen, so that the lease runs
/// out `leaseDurationSeconds` after this replica last saw it change, and never by comparing the
/// record's `renewTime` with this replica's wall clock. `mono` and `wall` are one reading of
/// the two clocks.
fn step(
    observed: &mut Option<Observed>,
    read: &LeaseSpec,
    identity: &str,
    duration: Duration,
    mono: Instant,
    wall: Timestamp,
) -> Step {
    if observed.as_ref().map(|o| &o.spec) != Some(read) {
        *observed = Some(Observed {
            spec: read.clone(),
            at: mono,
        });
    }
    let holder = read.holder_identity.as_deref().unwrap_or("");
    let ours = holder == identity;
    // client-go counts the duration the holder wrote. A record without one is not from a
    // client-go-like elector; waiting our own duration keeps it from being taken at once.
    let holder_duration = match read.lease_duration_seconds {
        Some(s) if s > 0 => Duration::from_secs(u64::from(s.unsigned_abs())),
        _ => duration,
    };
    let seen_at = observed.as_ref().map_or(mono, |o| o.at);
    let valid = mono < seen_at + holder_duration;
    if !holder.is_empty() && !ours && valid {
        return Step::Wait;
    }
    let mut spec = read.clone();
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(lease_seconds(duration));
    spec.renew_time = Some(MicroTime(wall));
    if !ours {
        spec.acquire_time = Some(MicroTime(wall));
        spec.lease_transitions = Some(read.lease_transitions.unwrap_or(0) + 1);
    }
    Step::Write(spec)
}

/// The lease duration as the Lease keeps it: whole seconds, at least one.
fn lease_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    clock: Arc<dyn Clock>,
    observed: Mutex<Option<Observed>>,
    leadership: Arc<Leadership>,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        clock: Arc<dyn Clock>,
        leadership: Arc<Leadership>,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            // What the others will count is what the Lease says, whole seconds: the deadlines
            // here are measured from the same duration.
            duration: Duration::from_secs(u64::from(lease_seconds(duration).unsigned_abs())),
            clock,
            observed: Mutex::new(None),
            leadership,
        }
    }

    /// How often to try to acquire or renew (client-go's retry period, 2 s of 15 s): several
    /// attempts fit in the renew deadline, so one failed request does not cost the lease.
    pub fn retry_period(&self) -> Duration {
        self.duration / 6
    }

    /// How long after the start of its last successful renewal the holder still leads.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// One attempt to acquire or renew. Ok(true) while this instance holds the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        // Taken before any request: anyone who sees the record written below saw it after
        // this instant, and waits a whole lease duration from then.
        let started = self.clock.now();
        let held = self.acquire_or_renew().await;
        match held {
            Ok(true) => self.leadership.set_until(started + self.renew_deadline()),
            Ok(false) => self.leadership.set_until(started),
            // A failed renewal leaves the deadline as it was: it runs out on its own.
            Err(_) => {}
        }
        held
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Option<Observed>> {
        self.observed.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| LeaseError::Read {
                name: self.name.clone(),
                source,
            })?;
        let write_err = |source| LeaseError::Write {
            name: self.name.clone(),
            source,
        };
        let wall = self.clock.wall();
        match existing {
            None => {
                let spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds(self.duration)),
                    acquire_time: Some(MicroTime(wall)),
                    renew_time: Some(MicroTime(wall)),
                    lease_transitions: Some(0),
                    ..Default::default()
                };
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec.clone()),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {
                        self.saw_written(spec);
                        Ok(true)
                    }
                    // Someone else created it first.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(write_err(e)),
                }
            }
            Some(mut lease) => {
                let read = lease.spec.clone().unwrap_or_default();
                let decided = step(
                    &mut self.observed(),
                    &read,
                    &self.identity,
                    self.duration,
                    self.clock.now(),
                    wall,
                );
                let Step::Write(spec) = decided else {
                    return Ok(false);
                };
                lease.spec = Some(spec.clone());
                // replace carries the resourceVersion we read: a concurrent writer makes this
                // fail with 409 instead of both believing they lead.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => {
                        self.saw_written(spec);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(write_err(e)),
                }
            }
        }
    }

    /// The record this instance wrote is the one it last saw: if another replica writes over
    /// it, the change starts the count again.
    fn saw_written(&self, spec: LeaseSpec) {
        *self.observed() = Some(Observed {
            spec,
            at: self.clock.now(),
        });
    }

    /// Gives the lease up so another instance can take over at once.
    pub async fn release(&self) {
        self.leadership.set_until(self.clock.now());
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(&self.identity)
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    /// A clock whose monotonic time a test moves by hand.
    #[derive(Debug)]
    struct FakeClock {
        base: Instant,
        elapsed: Mutex<Duration>,
    }

    impl FakeClock {
        fn new() -> Arc<Self> {
            Arc::new(FakeClock {
                base: Instant::now(),
                elapsed: Mutex::new(Duration::ZERO),
            })
        }

        fn set(&self, t: Duration) {
            *self.elapsed.lock().unwrap() = t;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.base + *self.elapsed.lock().unwrap()
        }

        fn wall(&self) -> Timestamp {
            "2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
                + SignedDuration::try_from(*self.elapsed.lock().unwrap()).unwrap()
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(holder: &str, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(ts("2020-01-01T00:00:00Z"))),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One read of the lease by replica "b": at `at` seconds on b's monotonic clock it reads
    /// `spec`, and should write (take over) or wait.
    struct Read {
        at: f64,
        spec: LeaseSpec,
        takes: bool,
    }

    fn read(at: f64, spec: LeaseSpec, takes: bool) -> Read {
        Read { at, spec, takes }
    }

    /// A's renewals as b sees them, b's wall clock being `now`: renewTime moves on each time.
    fn renewed_at(base: &str, secs: i64) -> LeaseSpec {
        record("a", ts(base) + SignedDuration::from_secs(secs), 1)
    }

    #[test]
    fn takeover_follows_observed_changes_not_remote_times() {
        let b_wall = ts("2030-06-01T12:00:00Z");
        let far_past = "2030-06-01T11:00:00Z"; // a's clock an hour behind b's
        let far_future = "2030-06-01T13:00:00Z"; // an hour ahead
        let stopped = record("a", ts(far_past), 1);
        let cases: Vec<(&str, Vec<Read>)> = vec![
            (
                "(a) a holder an hour behind that keeps renewing is never taken over",
                (0..=30)
                    .map(|i: i32| {
                        read(
                            f64::from(i) * 2.0,
                            renewed_at(far_past, i64::from(i) * 2),
                            false,
                        )
                    })
                    .collect(),
            ),
            (
                "(b) a holder that stops renewing is taken over a lease duration after its last change",
                vec![
                    read(0.0, renewed_at(far_past, 0), false),
                    read(2.0, renewed_at(far_past, 2), false),
                    read(4.0, renewed_at(far_past, 4), false),
                    read(10.0, renewed_at(far_past, 4), false),
                    read(18.9, renewed_at(far_past, 4), false),
                    read(19.1, renewed_at(far_past, 4), true),
                ],
            ),
            (
                "(c) a fresh replica waits a full lease duration from its first read, however old renewTime is",
                vec![
                    read(0.0, stopped.clone(), false),
                    read(14.9, stopped.clone(), false),
                    read(15.1, stopped.clone(), true),
                ],
            ),
            (
                "a stopped holder whose renewTime lies in the future is taken over all the same",
                vec![
                    read(0.0, renewed_at(far_future, 0), false),
                    read(15.1, renewed_at(far_future, 0), true),
                ],
            ),
            (
                "any change of the record starts the count again",
                vec![
                    read(0.0, stopped.clone(), false),
                    read(10.0, record("a", ts(far_past), 2), false),
                    read(24.9, record("a", ts(far_past), 2), false),
                    read(25.1, record("a", ts(far_past), 2), true),
                ],
            ),
            (
                "a released lease is taken at once",
                vec![read(0.0, record("", ts(far_past), 1), true)],
            ),
            (
                "our own lease is renewed at once, however old",
                vec![read(0.0, record("b", ts(far_past), 1), true)],
            ),
        ];
        for (name, reads) in cases {
            let base = Instant::now();
            let mut observed = None;
            for r in reads {
                let mono = base + Duration::from_secs_f64(r.at);
                let got = step(&mut observed, &r.spec, "b", LEASE, mono, b_wall);
                assert_eq!(
                    matches!(got, Step::Write(_)),
                    r.takes,
                    "{name}: at {}s got {got:?}",
                    r.at
                );
            }
        }
    }

    #[test]
    fn a_takeover_writes_our_wall_time_and_counts_a_transition() {
        let b_wall = ts("2030-06-01T12:00:00Z");
        let mut observed = None;
        let released = record("", ts("2030-06-01T11:00:00Z"), 4);
        let Step::Write(spec) = step(&mut observed, &released, "b", LEASE, Instant::now(), b_wall)
        else {
            panic!("a released lease is taken");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.renew_time, Some(MicroTime(b_wall)));
        assert_eq!(spec.acquire_time, Some(MicroTime(b_wall)));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        // A renewal keeps when it was acquired and the count of transitions.
        let later = b_wall + SignedDuration::from_secs(5);
        let Step::Write(renewed) = step(&mut observed, &spec, "b", LEASE, Instant::now(), later)
        else {
            panic!("our own lease is renewed");
        };
        assert_eq!(renewed.acquire_time, Some(MicroTime(b_wall)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(5));
    }

    #[test]
    fn leadership_runs_out_at_the_renew_deadline_on_the_monotonic_clock() {
        let clock = FakeClock::new();
        let elected = Leadership::elected(clock.clone());
        assert!(!elected.still_leading(), "no lease acquired yet");
        assert!(
            Leadership::default().still_leading(),
            "without election, always"
        );
        // Acquired at 0 s with a 15 s lease: leads until 10 s, then no longer, though nobody
        // else may take over before 15 s.
        elected.set_until(clock.now() + LEASE * 2 / 3);
        for (t, leading) in [(0.0, true), (9.9, true), (10.0, false), (20.0, false)] {
            clock.set(Duration::from_secs_f64(t));
            assert_eq!(elected.still_leading(), leading, "at {t}s");
        }
    }

    #[test]
    fn the_wall_clock_offset_shifts_lease_times_only() {
        let ten = SignedDuration::from_mins(10);
        let behind = SystemClock::with_offset(-ten);
        let before = Timestamp::now();
        let wall = behind.wall();
        let after = Timestamp::now();
        assert!(before - ten <= wall && wall <= after - ten, "{wall}");
        let before = Instant::now();
        assert!(behind.now() >= before);
    }
}
