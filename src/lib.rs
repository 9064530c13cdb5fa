//! retainer: a Kubernetes controller that keeps what a policy's CEL expressions say to keep and
//! sweeps the rest. The core (policy compilation, evaluation, schedules, status) is pure; the
//! Kubernetes and registry I/O sits at the edges.

pub mod admission;
pub mod api;
pub mod check;
pub mod controller;
pub mod engine;
pub mod explain;
pub mod expr;
pub mod gotime;
pub mod json;
pub mod oci;
pub mod refs;
pub mod schedule;
pub mod status;
