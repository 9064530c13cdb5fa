//! OCI registries: credentials, private CAs, a distribution-API client, and the inventory a
//! policy governs.

pub mod auth;
pub mod ca;
pub mod client;
pub mod governed;
pub mod inventory;

pub use auth::{Credentials, CredentialsError, credentials_for};
pub use ca::{CaBundleError, ExtraRoots, extra_roots};
pub use client::{
    Deleted, RegistryClient, RegistryError, RequestCounts, RequestKind, RequestTally, RetryPolicy,
};
pub use governed::{RegistryOptions, fetch_inventory, fetch_inventory_counted};
pub use inventory::{ManifestCache, inventory};
