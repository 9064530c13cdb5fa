//! What a policy's worker does next, and when it looks again: pure, from what the worker knows
//! and the time. The worker (worker/) does the I/O this asks for.

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Why a running sweep stops before its next delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// The process got SIGTERM or SIGINT.
    Shutdown,
    /// The leader lease was lost: another replica may lead.
    LostLease,
    /// The policy's spec changed (a new generation): the sweep's verdicts may no longer hold.
    Edited,
    /// `spec.suspend` became true.
    Suspended,
    /// The policy was deleted (or replaced by a new one of the same name).
    PolicyDeleted,
}

impl Interruption {
    /// Whether the interrupted sweep can still be reported in the policy's status: not by a
    /// replica that lost the lease (another may lead and write), not on a deleted policy.
    pub fn reportable(self) -> bool {
        matches!(
            self,
            Interruption::Shutdown | Interruption::Edited | Interruption::Suspended
        )
    }
}

impl fmt::Display for Interruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interruption::Shutdown => "the controller shutting down",
            Interruption::LostLease => "the loss of the leader lease",
            Interruption::Edited => "an edit of the policy",
            Interruption::Suspended => "suspend",
            Interruption::PolicyDeleted => "the policy's deletion",
        })
    }
}

/// Why a sweep runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// The sweep-requested annotation got a new value.
    Requested,
    /// Status shows a sweep that started and never completed: cut short by a restart, a
    /// leader change or an interruption. Finished now rather than at the next cron time.
    Resume,
}

/// What the worker knows about a policy that compiled.
#[derive(Clone, Debug)]
pub struct Facts {
    pub now: Timestamp,
    pub next_sweep: Timestamp,
    pub requested: bool,
    pub resume: bool,
    pub suspended: bool,
    /// OCI only (None for Jobs and Secrets): the registry's inventory.
    pub registry: Option<RegistryFacts>,
}

#[derive(Clone, Debug, Default)]
pub struct RegistryFacts {
    /// When the inventory in hand was read (started).
    pub read_at: Option<Timestamp>,
    /// When the last read that failed was started, if it is later than `read_at`.
    pub failed_at: Option<Timestamp>,
    /// A read is under way.
    pub reading: bool,
    /// Since when a sweep has waited for a fresh inventory.
    pub sweep_waiting_since: Option<Timestamp>,
    pub refresh: Duration,
    /// How soon a failed read is tried again.
    pub retry: Duration,
}

/// What to do about sweeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepStep {
    None,
    /// Sweep now, with the verdicts of this evaluation.
    Now(Trigger),
    /// Due, but the registry must be read afresh first: wait for it.
    WaitForInventory(Trigger),
    /// Due, and the read made for it failed: report, delete nothing, wait for the next time.
    RegistryFailed(Trigger),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub sweep: SweepStep,
    /// Start a registry read now.
    pub read_inventory: bool,
    /// Look again at this time at the latest (changes wake the worker earlier).
    pub wake_at: Option<Timestamp>,
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

pub fn decide(f: &Facts) -> Decision {
    let trigger = if f.suspended {
        None
    } else if f.resume {
        Some(Trigger::Resume)
    } else if f.requested {
        Some(Trigger::Requested)
    } else if f.now >= f.next_sweep {
        Some(Trigger::Schedule)
    } else {
        None
    };
    let mut wake: Vec<Timestamp> = Vec::new();
    if !f.suspended {
        wake.push(f.next_sweep);
    }
    let Some(reg) = &f.registry else {
        return Decision {
            sweep: trigger.map_or(SweepStep::None, SweepStep::Now),
            read_inventory: false,
            wake_at: wake.into_iter().min(),
        };
    };
    let mut read = false;
    let sweep = match trigger {
        None => SweepStep::None,
        Some(t) => {
            // The sweep needs the registry as it is now: an inventory read started after the
            // sweep fell due (`sweep_waiting_since`, set by the worker when it first waits).
            match reg.sweep_waiting_since {
                Some(since)
                    if reg.read_at.is_some_and(|r| r > since) && reg.failed_at.is_none() =>
                {
                    SweepStep::Now(t)
                }
                Some(since) if reg.failed_at.is_some_and(|r| r > since) => {
                    SweepStep::RegistryFailed(t)
                }
                _ => {
                    read = !reg.reading;
                    SweepStep::WaitForInventory(t)
                }
            }
        }
    };
    if !reg.reading && !matches!(sweep, SweepStep::RegistryFailed(_)) {
        let next_read = match (reg.read_at, reg.failed_at) {
            (_, Some(failed)) => Some(after(failed, reg.retry)),
            (Some(ok), None) => Some(after(ok, reg.refresh)),
            (None, None) => None,
        };
        match next_read {
            None => read = true,
            Some(t) if t <= f.now => read = true,
            Some(t) => wake.push(t),
        }
    }
    Decision {
        sweep,
        read_inventory: read,
        wake_at: wake.into_iter().min(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-01-10T12:00:00Z";

    fn facts() -> Facts {
        Facts {
            now: ts(NOW),
            next_sweep: ts("2026-01-10T13:00:00Z"),
            requested: false,
            resume: false,
            suspended: false,
            registry: None,
        }
    }

    fn reg() -> RegistryFacts {
        RegistryFacts {
            read_at: Some(ts("2026-01-10T11:58:00Z")),
            failed_at: None,
            reading: false,
            sweep_waiting_since: None,
            refresh: Duration::from_secs(300),
            retry: Duration::from_secs(15),
        }
    }

    #[test]
    fn kubernetes_targets() {
        let table: Vec<(&str, Facts, SweepStep, Option<&str>)> = vec![
            (
                "not due",
                facts(),
                SweepStep::None,
                Some("2026-01-10T13:00:00Z"),
            ),
            (
                "due by schedule",
                Facts {
                    next_sweep: ts(NOW),
                    ..facts()
                },
                SweepStep::Now(Trigger::Schedule),
                Some(NOW),
            ),
            (
                "requested",
                Facts {
                    requested: true,
                    ..facts()
                },
                SweepStep::Now(Trigger::Requested),
                Some("2026-01-10T13:00:00Z"),
            ),
            (
                "resumed before anything else",
                Facts {
                    resume: true,
                    requested: true,
                    ..facts()
                },
                SweepStep::Now(Trigger::Resume),
                Some("2026-01-10T13:00:00Z"),
            ),
            (
                "suspended: neither due nor woken for the schedule",
                Facts {
                    suspended: true,
                    resume: true,
                    next_sweep: ts(NOW),
                    ..facts()
                },
                SweepStep::None,
                None,
            ),
        ];
        for (name, f, sweep, wake) in table {
            let d = decide(&f);
            assert_eq!(d.sweep, sweep, "{name}");
            assert_eq!(d.wake_at, wake.map(ts), "{name}");
            assert!(!d.read_inventory, "{name}");
        }
    }

    #[test]
    fn registries_are_read_off_the_sweep_path() {
        let waiting = Some(ts("2026-01-10T11:59:00Z"));
        let table: Vec<(&str, Facts, SweepStep, bool, Option<&str>)> = vec![
            (
                "fresh enough: next read at refresh",
                Facts {
                    registry: Some(reg()),
                    ..facts()
                },
                SweepStep::None,
                false,
                Some("2026-01-10T12:03:00Z"),
            ),
            (
                "never read: read",
                Facts {
                    registry: Some(RegistryFacts {
                        read_at: None,
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::None,
                true,
                Some("2026-01-10T13:00:00Z"),
            ),
            (
                "reading: wait for it, no timer",
                Facts {
                    registry: Some(RegistryFacts {
                        read_at: None,
                        reading: true,
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::None,
                false,
                Some("2026-01-10T13:00:00Z"),
            ),
            (
                "failed: retried after the retry interval",
                Facts {
                    registry: Some(RegistryFacts {
                        failed_at: Some(ts("2026-01-10T11:59:50Z")),
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::None,
                false,
                Some("2026-01-10T12:00:05Z"),
            ),
            (
                "just due, however fresh the inventory: read first",
                Facts {
                    requested: true,
                    registry: Some(RegistryFacts {
                        read_at: Some(ts(NOW)),
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::WaitForInventory(Trigger::Requested),
                true,
                Some("2026-01-10T12:05:00Z"),
            ),
            (
                "due with an inventory older than the due time: read first",
                Facts {
                    requested: true,
                    registry: Some(RegistryFacts {
                        sweep_waiting_since: waiting,
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::WaitForInventory(Trigger::Requested),
                true,
                Some("2026-01-10T12:03:00Z"),
            ),
            (
                "due, read since: sweep",
                Facts {
                    requested: true,
                    registry: Some(RegistryFacts {
                        sweep_waiting_since: waiting,
                        read_at: Some(ts("2026-01-10T11:59:30Z")),
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::Now(Trigger::Requested),
                false,
                Some("2026-01-10T12:04:30Z"),
            ),
            (
                "due, the read since failed: report it",
                Facts {
                    requested: true,
                    registry: Some(RegistryFacts {
                        sweep_waiting_since: waiting,
                        failed_at: Some(ts("2026-01-10T11:59:30Z")),
                        ..reg()
                    }),
                    ..facts()
                },
                SweepStep::RegistryFailed(Trigger::Requested),
                false,
                Some("2026-01-10T13:00:00Z"),
            ),
        ];
        for (name, f, sweep, read, wake) in table {
            let d = decide(&f);
            assert_eq!(d.sweep, sweep, "{name}");
            assert_eq!(d.read_inventory, read, "{name}");
            assert_eq!(d.wake_at, wake.map(ts), "{name}");
        }
    }
}
